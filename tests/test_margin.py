"""The positive-pair regulariser (issue 16, item 4): its three forms on hand-made cosines, the activity statistics the
align stage records, and `align.margin_form` leaving older recipes' fingerprints alone."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.recipe import AlignConfig, load_recipe, parse_recipe
from compress.recipe import schema
from compress.train.align import AlignStage
from compress.train.data import Batch
from compress.train.losses import ClipLoss, MarginRegularizer

ROOT = Path(__file__).resolve().parents[1]
COS = [-0.5, 0.3, 0.6, 0.95]


def _pairs(cos: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit image e1 against unit text (c, sqrt(1 - c^2)): cosine exactly c, and d cos / d c = 1 (the norm is 1 for
    every c), so the gradient on the leaf `c` is the form's derivative over the batch size."""
    c = torch.tensor(cos, dtype=torch.float64, requires_grad=True)
    text = torch.stack([c, torch.sqrt(1 - c ** 2)], dim=1)
    image = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(len(cos), 2)
    return image, text, c


@pytest.mark.parametrize("form, value, slope", [
    ("hinge", lambda c: max(0.5 - c, 0.0), lambda c: -1.0 if c < 0.5 else 0.0),
    ("linear", lambda c: 1 - c, lambda c: -1.0),
    ("square", lambda c: (1 - c) ** 2, lambda c: -2 * (1 - c)),
])
def test_each_form_value_and_gradient_on_hand_made_cosines(form, value, slope):
    image, text, c = _pairs(COS)
    loss = MarginRegularizer(margin=0.5, form=form)(image, text)
    loss.backward()
    assert loss.item() == pytest.approx(sum(value(x) for x in COS) / len(COS), abs=1e-9)
    assert c.grad.tolist() == pytest.approx([slope(x) / len(COS) for x in COS], abs=1e-9)


def test_hinge_is_todays_regulariser_and_silent_above_the_margin():
    torch.manual_seed(0)
    image, text = torch.randn(6, 8), torch.randn(6, 8)
    cos = (nn.functional.normalize(image, dim=-1) * nn.functional.normalize(text, dim=-1)).sum(-1)
    assert torch.equal(MarginRegularizer(0.5)(image, text), torch.relu(0.5 - cos).mean())  # the default form, bit-equal
    a = torch.randn(5, 8, requires_grad=True)
    MarginRegularizer(0.5, "hinge")(a, a.detach()).backward()  # cosine 1: past the margin
    assert a.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="hinge, linear, square"):
        MarginRegularizer(0.5, "cubic")


# s_ij = cos(image_i, text_j) for images e1, e2, e3 in R^4 and unit texts whose first three components are column j.
S = torch.tensor([[0.9, 0.1, -0.2], [0.3, 0.5, 0.4], [-0.1, 0.7, 0.2]], dtype=torch.float64)


def _texts() -> torch.Tensor:
    cols = S.t()
    return torch.cat([cols, torch.sqrt(1 - (cols ** 2).sum(1, keepdim=True))], dim=1).float()


def _images() -> torch.Tensor:
    return torch.eye(3, 4)


@pytest.mark.parametrize("form, active", [("hinge", 2 / 3), ("linear", 1.0), ("square", 1.0)])
def test_activity_on_a_hand_made_batch(form, active):
    stats = MarginRegularizer(margin=0.6, form=form).activity(_images(), _texts())
    assert stats["pos_cos"].item() == pytest.approx((0.9 + 0.5 + 0.2) / 3, abs=1e-6)
    assert stats["active"].item() == pytest.approx(active)  # hinge: 0.5 and 0.2 are below 0.6, 0.9 is not
    # rows: 0.9 - 0.1 = 0.8, 0.5 - 0.4 = 0.1, 0.2 - 0.7 = -0.5: the worst row sets the batch margin
    assert stats["batch_margin"].item() == pytest.approx(-0.5, abs=1e-6)
    assert not any(v.requires_grad for v in stats.values())


class _Table(nn.Module):
    """Token id (first column) -> a fixed embedding row."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.rows = nn.Parameter(rows.clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows[ids[:, 0]]


def _stage(**cfg) -> AlignStage:
    texts = torch.cat([_texts(), _images()])  # ids 0-2: the hand-made captions (en); 3-5: the images themselves (zh)
    image = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        image.weight.copy_(torch.eye(4))
    return AlignStage(image, _Table(texts), nn.Parameter(torch.tensor(math.log(10.0))),
                      AlignConfig(**({"batch_size": 3} | cfg)), trim_text=False)


def _batch() -> Batch:
    ids = lambda first: torch.tensor([[first], [first + 1], [first + 2]])
    return Batch(keys=torch.zeros(3, 2, dtype=torch.long), pixels=_images(), en=["a", "b", "c"], zh=["甲", "乙", "丙"],
                 en_ids=ids(0), zh_ids=ids(3), has_en=torch.ones(3, dtype=torch.bool), has_zh=torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("form", ["hinge", "linear", "square"])
def test_align_stage_records_activity_per_language_without_changing_the_loss(form):
    stage = _stage(margin=0.6, margin_form=form, margin_reg=0.25)
    loss, parts = stage(_batch())
    assert parts["pos_cos_en"].item() == pytest.approx(1.6 / 3, abs=1e-6)
    assert parts["batch_margin_en"].item() == pytest.approx(-0.5, abs=1e-6)
    assert parts["margin_active_en"].item() == pytest.approx(2 / 3 if form == "hinge" else 1.0)
    assert parts["pos_cos_zh"].item() == pytest.approx(1.0, abs=1e-6)  # each image against itself
    assert parts["batch_margin_zh"].item() == pytest.approx(1.0, abs=1e-6)  # orthogonal negatives
    img, en, zh = _images(), _texts(), _images()
    clip, reg = ClipLoss(), MarginRegularizer(0.6, form)
    scale = stage.logit_scale
    expected = sum((clip(img, t, scale) + 0.25 * reg(img, t)) / 2 for t in (en, zh))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert parts["margin_reg"].item() == pytest.approx(((reg(img, en) + reg(img, zh)) / 2).item(), abs=1e-6)


def test_activity_is_recorded_with_the_regulariser_off_and_the_loss_is_the_same():
    stage = _stage()
    loss, parts = stage(_batch())
    assert "margin_reg" not in parts and {"pos_cos_en", "margin_active_zh", "batch_margin_en"} <= set(parts)
    img, clip = _images(), ClipLoss()
    assert torch.allclose(loss, (clip(img, _texts(), stage.logit_scale) + clip(img, img, stage.logit_scale)) / 2,
                          atol=1e-7)


# --------------------------------------------------------------------------------------------------- the fingerprint
# the closed-set headline before align.margin_form existed (with students.text.inventory none: the vocabulary of then)
MOBILEVIT_INT8_FINGERPRINT = "900bea425d44d07a"


def _payload(recipe, monkeypatch) -> dict:
    """The dict `fingerprint()` hashes."""
    seen, real = [], json.dumps
    monkeypatch.setattr(schema.json, "dumps", lambda obj, **kw: seen.append(obj) or real(obj, **kw))
    recipe.fingerprint()
    monkeypatch.undo()
    return seen[-1]


def test_margin_form_default_keeps_the_fingerprint(monkeypatch):
    recipe = load_recipe(ROOT / "tests" / "data" / "mobilevit_int8_closed_set.yaml", ["students.text.inventory=none"])
    assert recipe.align.margin_form == "hinge"
    assert "margin_form" not in _payload(recipe, monkeypatch)["align"]
    if schema.TRAINING_VERSION == 2:  # a deliberate version bump changes every hash; the default form must not
        assert recipe.fingerprint() == MOBILEVIT_INT8_FINGERPRINT
    base = {"name": "x"}
    plain = parse_recipe(base).fingerprint()
    assert parse_recipe({**base, "align": {"margin_form": "hinge"}}).fingerprint() == plain
    linear = parse_recipe({**base, "align": {"margin_form": "linear"}}).fingerprint()
    square = parse_recipe({**base, "align": {"margin_form": "square"}}).fingerprint()
    assert len({plain, linear, square}) == 3


def test_margin_form_is_checked_when_the_recipe_loads():
    from compress.errors import UserError

    with pytest.raises((UserError, ValueError), match="margin_form"):
        parse_recipe({"name": "x", "align": {"margin_form": "cubic"}})
    assert parse_recipe({"name": "x"}, ["align.margin_form=square"]).align.margin_form == "square"


def test_report_shows_the_last_epochs_activity():
    from compress.pipeline.report import render_margin

    parts = [{"pos_cos_en": 0.1, "pos_cos_zh": 0.2, "margin_active_en": 1.0, "margin_active_zh": 1.0,
              "batch_margin_en": -0.3, "batch_margin_zh": -0.2},
             {"pos_cos_en": 0.61, "pos_cos_zh": 0.52, "margin_active_en": 0.25, "margin_active_zh": 0.5,
              "batch_margin_en": -0.125, "batch_margin_zh": 0.0625}]
    report = {"recipe": {"align": {"margin_form": "linear", "margin_reg": 0.1, "margin": 0.5}},
              "training": {"distill": {"epoch_parts": [{"map": 1.0}]}, "align": {"epoch_parts": parts}}}
    text = "\n".join(render_margin(report))
    assert "Form `linear`, weight 0.1" in text
    assert "| align | 0.610 / 0.520 | 0.250 / 0.500 | -0.125 / 0.062 |" in text
    assert "distill" not in text
    assert render_margin({"training": {"distill": {"epoch_parts": [{"map": 1.0}]}}}) == []
