"""HFTeacher against tiny real AltCLIP / Chinese-CLIP / CLIP checkpoints saved to disk (no mocks, no network)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from transformers import AltCLIPModel, AutoTokenizer, BertConfig, ChineseCLIPModel, CLIPModel, PreTrainedModel

from compress.errors import UserError
from compress.teachers.base import Teacher
from compress.teachers.hf import HFTeacher
from tests import hf_fixtures as fx

KINDS: dict[str, tuple[Callable[[Path], Path], type[PreTrainedModel], list[float], list[float]]] = {
    "altclip": (fx.make_tiny_altclip, AltCLIPModel, fx.OPENAI_MEAN, fx.OPENAI_STD),
    "chinese_clip": (fx.make_tiny_chinese_clip, ChineseCLIPModel, fx.OPENAI_MEAN, fx.OPENAI_STD),
    "clip": (fx.make_tiny_clip, CLIPModel, fx.CLIP_MEAN, fx.CLIP_STD),
}
TEXTS = ["a photo of a cat", "一只猫的照片", "two people riding bicycles in the city at night", "河流和山脉"]
GRID = fx.IMAGE_SIZE // fx.PATCH_SIZE


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: make(root / kind) for kind, (make, *_rest) in KINDS.items()}


@pytest.fixture(scope="module", params=list(KINDS))
def loaded(request: pytest.FixtureRequest, folders: dict[str, Path]) -> tuple[str, HFTeacher, PreTrainedModel]:
    """(kind, teacher, an independently loaded reference model of the same folder)."""
    kind = request.param
    folder = folders[kind]
    reference = KINDS[kind][1].from_pretrained(folder).eval()
    return kind, HFTeacher.from_pretrained(str(folder)), reference


def _pooled(out: object) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _reference_pixels(pixels: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    x = F.interpolate(pixels, size=(fx.IMAGE_SIZE, fx.IMAGE_SIZE), mode="bicubic", antialias=True).clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_loads_the_real_class_and_metadata(loaded: tuple[str, HFTeacher, PreTrainedModel]) -> None:
    kind, teacher, _ = loaded
    assert isinstance(teacher, Teacher)
    assert type(teacher.model) is KINDS[kind][1]
    assert teacher.model_type == kind
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert teacher.embed_dim == fx.PROJ_DIM
    assert teacher.image_size == fx.IMAGE_SIZE
    assert teacher.logit_scale == pytest.approx(torch.tensor(2.6592).exp().item(), rel=1e-4)
    assert teacher.max_text_len == {"altclip": 64, "chinese_clip": 52, "clip": 40}[kind]


def test_encode_image_matches_get_image_features(loaded: tuple[str, HFTeacher, PreTrainedModel]) -> None:
    kind, teacher, reference = loaded
    mean, std = KINDS[kind][2], KINDS[kind][3]
    pixels = torch.rand(3, 3, 45, 37, generator=torch.Generator().manual_seed(1))

    feats = teacher.encode_image(pixels)

    x = _reference_pixels(pixels, mean, std)
    with torch.no_grad():
        expected = _pooled(reference.get_image_features(pixel_values=x))
        hidden = reference.vision_model(pixel_values=x, output_hidden_states=True).hidden_states
    assert feats.embedding.shape == (3, fx.PROJ_DIM)
    torch.testing.assert_close(feats.embedding, expected, atol=1e-5, rtol=1e-4)

    # default: 3 evenly spaced layers ending with the last, deduplicated for this 2-layer tower
    assert teacher.map_layers == [0, 1]
    assert teacher.map_channels == [fx.HIDDEN, fx.HIDDEN]
    assert [tuple(m.shape) for m in feats.maps] == [(3, fx.HIDDEN, GRID, GRID)] * 2
    for layer, fmap in zip(teacher.map_layers, feats.maps):
        patches = hidden[layer + 1][:, 1:].reshape(3, GRID, GRID, fx.HIDDEN).permute(0, 3, 1, 2)
        torch.testing.assert_close(fmap, patches, atol=1e-5, rtol=1e-4)


def test_explicit_map_layers_and_range_check(folders: dict[str, Path]) -> None:
    teacher = HFTeacher.from_pretrained(str(folders["clip"]), map_layers=[-1])
    assert teacher.map_layers == [fx.LAYERS - 1]
    feats = teacher.encode_image(torch.rand(1, 3, fx.IMAGE_SIZE, fx.IMAGE_SIZE))
    assert len(feats.maps) == 1 == len(teacher.map_channels)
    with pytest.raises(UserError, match="out of range"):
        HFTeacher.from_pretrained(str(folders["clip"]), map_layers=[fx.LAYERS])


def test_encode_text_matches_get_text_features(loaded: tuple[str, HFTeacher, PreTrainedModel], folders) -> None:
    kind, teacher, reference = loaded
    feats = teacher.encode_text(TEXTS)

    tokenizer = AutoTokenizer.from_pretrained(folders[kind])
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=teacher.max_text_len, return_tensors="pt")
    if kind == "clip":
        batch.pop("token_type_ids", None)
    with torch.no_grad():
        expected = _pooled(reference.get_text_features(**batch))
        projected_hidden = reference.text_projection(feats.hidden)
    assert feats.embedding.shape == (len(TEXTS), fx.PROJ_DIM)
    torch.testing.assert_close(feats.embedding, expected, atol=1e-5, rtol=1e-4)
    # `hidden` is exactly what the projection consumes
    torch.testing.assert_close(projected_hidden, feats.embedding, atol=1e-5, rtol=1e-4)
    assert feats.hidden.shape[0] == len(TEXTS)

    # every pair of different strings gives a different embedding
    e = feats.embedding
    for i in range(len(TEXTS)):
        for j in range(i + 1, len(TEXTS)):
            assert not torch.allclose(e[i], e[j], atol=1e-4)


def test_text_padding_and_truncation(loaded: tuple[str, HFTeacher, PreTrainedModel]) -> None:
    _, teacher, _ = loaded
    alone = teacher.encode_text(["a photo of a cat"]).embedding
    batched = teacher.encode_text(["a photo of a cat", TEXTS[2] * 3]).embedding
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-4)  # padding is masked out
    long = teacher.encode_text([" ".join(fx.CORPUS) * 4])  # longer than every position table
    assert long.embedding.shape == (1, fx.PROJ_DIM)


def test_num_params_counts_towers_and_projections(loaded: tuple[str, HFTeacher, PreTrainedModel]) -> None:
    _, teacher, reference = loaded
    towers = (reference.vision_model, reference.text_model, reference.visual_projection, reference.text_projection)
    assert teacher.num_params() == sum(p.numel() for t in towers for p in t.parameters())
    assert teacher.num_params() == reference.num_parameters() - 1  # everything but the logit scale


def test_outputs_are_usable_in_a_student_loss(folders: dict[str, Path]) -> None:
    """inference_mode tensors cannot be saved for backward; the teacher must hand out plain tensors."""
    teacher = HFTeacher.from_pretrained(str(folders["altclip"]))
    image = teacher.encode_image(torch.rand(2, 3, 20, 20))
    text = teacher.encode_text(["a photo of a dog", "一只狗"])
    student = torch.nn.Linear(fx.PROJ_DIM, fx.PROJ_DIM)
    loss = F.mse_loss(student(image.embedding), text.embedding) + F.cosine_similarity(
        student(text.embedding), image.embedding
    ).mean() + image.maps[0].mul(student.weight.sum()).mean()
    loss.backward()
    assert student.weight.grad is not None


def test_offline_hub_id_is_a_one_line_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        HFTeacher.from_pretrained("BAAI/AltCLIP")
    assert time.perf_counter() - start < 10
    msg = str(err.value)
    assert "\n" not in msg
    assert "BAAI/AltCLIP" in msg and "could not download" in msg
    assert "local folder" in msg and "--local-dir" in msg


@pytest.mark.parametrize("spec", ["missing", "./no/such/teacher", "/no/such/teacher"])
def test_missing_folder_is_a_user_error(tmp_path: Path, spec: str) -> None:
    path = str(tmp_path / spec) if spec == "missing" else spec
    with pytest.raises(UserError, match="does not exist") as err:
        HFTeacher.from_pretrained(path)
    assert "\n" not in str(err.value) and "chinese_clip" in str(err.value)


def test_unsupported_or_broken_folder_is_a_user_error(tmp_path: Path) -> None:
    bert = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(bert)
    with pytest.raises(UserError, match="'bert' model.*altclip, chinese_clip, clip"):
        HFTeacher.from_pretrained(str(bert))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="could not load teacher from folder.*altclip") as err:
        HFTeacher.from_pretrained(str(empty))
    assert "\n" not in str(err.value)
