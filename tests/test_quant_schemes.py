"""Every quantization scheme of the registry (compress/quant/schemes.py), through the real torchao / ExecuTorch stacks:
it exports, runs in the ExecuTorch runtime and matches its converted eager model. The ViT student runs 8da8w and
8da4w here, the text student every scheme (test_quant_schemes_text.py), and MobileViT and text `int8` / `fp32` are
in test_qat_export.py: each scheme lowers on an image tower and on the text tower."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from compress.errors import UserError
from compress.quant.schemes import SCHEMES, get_scheme, quantize_tower
from compress.recipe import parse_recipe
from compress.pipeline.report import render_schemes, scheme_rows
from mobile_export.lower.capture import save_pte
from mobile_export.lower.targets import lower_to_pte
from mobile_export.runtime import PteModule
from students.registry import create_image_tower, create_text_tower
from tests.test_qat_export import CONTEXT, EMBED_DIM, IMAGE_SIZE, VOCAB, images, like_trained, tokens

TOWERS = {
    "vit": lambda: create_image_tower("vit_pico_p8", EMBED_DIM, IMAGE_SIZE),
    "text": lambda: create_text_tower("text_tiny", vocab_size=VOCAB, embed_dim=EMBED_DIM, context_length=CONTEXT),
}
# int8 (and fp32) on MobileViT and text are lowered and checked in test_qat_export.py; the other schemes run on ViT
# and text here (MobileViT's lowering costs a minute a scheme, and make test has ten minutes in all).
# The text cases are in test_quant_schemes_text.py: a file runs in one xdist worker, and this one alone was the longest.
# Static int8 (QAT and PTQ) lowers on MobileViT (conv + attention + linear) in test_qat_export.py and ptq-int8 on the
# text tower here; the ViT runs the two dynamic-activation schemes (make test has ten minutes in all).
CASES = [("vit", s) for s in ("8da8w", "8da4w")]


def batch(tower: str, n: int, seed: int) -> torch.Tensor:
    return tokens(n, seed) if tower == "text" else images(n, seed)


def quantize(tower: str, name: str) -> torch.nn.Module:
    """prepare -> one QAT step (QAT schemes) -> calibration -> convert."""
    torch.manual_seed(0)
    scheme = get_scheme(name)
    module = scheme.prepare(like_trained(TOWERS[tower]()), (batch(tower, 2, 0),))
    if scheme.trains:
        scheme.set_train(module, True)
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
        loss = F.mse_loss(module(batch(tower, 2, 1)), torch.randn(2, EMBED_DIM, generator=torch.Generator().manual_seed(2)))
        loss.backward()
        opt.step()
    scheme.set_train(module, False)
    with torch.no_grad():
        module(batch(tower, 4, 3))  # calibration (observers) for the static schemes
    return scheme.convert(module)


@pytest.fixture(scope="module")
def lowered(tmp_path_factory):
    """(tower, scheme) -> (converted eager module, LoweredProgram, .pte path), built on first use."""
    out, cache = tmp_path_factory.mktemp("schemes"), {}

    def get(tower: str, name: str):
        if (tower, name) not in cache:
            module = quantize(tower, name)
            program = lower_to_pte(module, (batch(tower, 1, 0),))
            cache[tower, name] = (module, program, save_pte(program, out / f"{tower}_{name}.pte"))
        return cache[tower, name]

    return get


def check_scheme(lowered, tower: str, name: str) -> None:
    module, program, path = lowered(tower, name)
    x = batch(tower, 3, seed=6)
    with torch.no_grad():
        expected = module(x)
    got = PteModule(path)(x)
    assert got.shape == (3, EMBED_DIM)
    assert F.cosine_similarity(got, expected, dim=-1).min() >= 0.98
    left = program.delegation["non_delegated_ops"]
    assert program.delegation["delegated_ops"].get("aten_linear_default", 0) > 0, program.delegation
    assert not any("linear" in op or "conv" in op for op in left), left  # every matmul layer ran inside XNNPACK
    if tower == "text":  # the table is stored int8 and looked up by the quantized kernel in every scheme
        assert left.get("embedding_byte_default") == 1 and "aten_embedding_default" not in left


@pytest.mark.parametrize("tower,name", CASES, ids=[f"{t}-{s}" for t, s in CASES])
def test_scheme_exports_and_runs(lowered, tower, name):
    check_scheme(lowered, tower, name)


def test_int4_weights_make_the_vit_smaller_than_int8(lowered):
    assert lowered("vit", "8da4w")[1].size_bytes < 0.7 * lowered("vit", "8da8w")[1].size_bytes


def test_quantize_tower_is_the_post_training_path():
    torch.manual_seed(0)
    text = like_trained(TOWERS["text"]())
    converted = quantize_tower(SCHEMES["ptq-int8"], text, (tokens(2),), [(tokens(4, seed=1),)])
    with torch.no_grad():
        assert F.cosine_similarity(converted(tokens(3, seed=2)), text(tokens(3, seed=2))).min() > 0.95
    assert not any(isinstance(m, torch.nn.Embedding) for m in converted.modules())  # a converted graph ...
    assert any(isinstance(m, torch.nn.Embedding) for m in text.modules())  # ... of a copy: the fp32 tower is intact


@pytest.mark.parametrize("name", list(SCHEMES))
def test_scheme_config_is_json(name):
    config = json.loads(json.dumps(SCHEMES[name].config()))
    assert config["scheme"] == name
    if name.startswith("8da"):
        kinds = {row["config"]["_type"] for row in config["configs"]}
        assert kinds == {"Int8DynamicActivationIntxWeightConfig", "IntxWeightOnlyConfig"}
        bits = {row["config"]["_data"]["weight_dtype"]["_data"] for row in config["configs"]}
        assert ("int4" in bits) == (name == "8da4w")
    if name in ("int8", "ptq-int8"):
        assert config["weight"]["qscheme"] == "per_channel_symmetric" and config["is_qat"] == (name == "int8")


def test_unknown_scheme_is_a_did_you_mean():
    with pytest.raises(UserError, match="did you mean '8da4w'"):
        get_scheme("8da4")


def test_recipe_qat_scheme_and_compare():
    base = {"name": "x"}
    recipe = parse_recipe({**base, "qat": {"scheme": "8da4w", "compare": ["int8", "ptq-int8"]}})
    assert recipe.qat.schemes == ["8da4w", "int8", "ptq-int8"]
    for bad, message in [({"scheme": "in8"}, "did you mean 'int8'"), ({"scheme": "fp32"}, "qat.enabled: false"),
                         ({"compare": ["8da8"]}, "did you mean '8da8w'"), ({"compare": ["int8"]}, "already qat.scheme"),
                         ({"compare": ["8da8w", "8da8w"]}, "once"),
                         ({"contrastive": 0}, "leaves QAT no loss; set qat.self_distill > 0")]:
        with pytest.raises(UserError, match=message) as err:
            parse_recipe({**base, "qat": bad})
        assert "\n" not in str(err.value)
    # compare adds models beside the run's own, and int8 is the scheme every recipe trained before the key existed
    plain = parse_recipe(base).fingerprint()
    assert parse_recipe({**base, "qat": {"scheme": "int8", "compare": ["8da4w"]}}).fingerprint() == plain
    assert parse_recipe({**base, "qat": {"scheme": "8da4w"}}).fingerprint() != plain
    assert parse_recipe({**base, "qat": {"self_distill": 0.0}}).fingerprint() == plain  # recipes before the key
    assert parse_recipe({**base, "qat": {"self_distill": 1.0}}).fingerprint() != plain
    assert parse_recipe({**base, "qat": {"calibrate": False}}).fingerprint() == plain
    assert parse_recipe({**base, "qat": {"calibrate": True}}).fingerprint() != plain
    assert parse_recipe({**base, "qat": {"contrastive": 1.0}}).fingerprint() == plain
    assert parse_recipe({**base, "qat": {"contrastive": 0.0, "self_distill": 1.0}}).fingerprint() != \
        parse_recipe({**base, "qat": {"self_distill": 1.0}}).fingerprint()


def test_report_compares_schemes():
    def model(mb: float, ms: float, en: float, zh: float) -> dict:
        return {"pte_bytes": {"image": mb * 1e6, "text": mb * 1e6}, "latency_ms": {"image": ms, "text": ms},
                "zero_shot": {"eval": {"en": {"top1": en}, "zh": {"top1": zh}}}}

    report = {"models": {"student_fp32_pte": model(4.0, 1.0, 0.6, 0.5), "student_int8_pte": model(1.2, 0.5, 0.595, 0.49),
                         "student_8da4w_pte": model(2.0, 0.8, 0.58, 0.47)}}
    rows = {r["scheme"]: r for r in scheme_rows(report)}
    assert set(rows) == {"fp32", "int8", "8da4w"} and rows["int8"]["image_mb"] == pytest.approx(1.2)
    table = "\n".join(render_schemes(report))
    assert "| `int8` | 1.200 (0.300) |" in table and "-0.5 / -1.0" in table


def test_qat_from_ptq_ranges_starts_at_ptq_and_trains_only_the_weights():
    """qat.calibrate: the QAT graph takes ptq-int8's calibrated (histogram) activation ranges, so untrained it
    converts to exactly the ptq-int8 graph; training then leaves those ranges alone (inputs 5x larger do not move
    them, unlike an unseeded copy) while the weight observers follow the trained weights."""
    import copy

    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    from compress.quant.pt2e import convert_qat, prepare_ptq, prepare_qat, seed_activation_ranges, set_train

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    ex, calib, probe = (torch.randn(2, 8),), torch.randn(64, 8), torch.randn(16, 8)
    calib[0, 0] = 30.0  # an outlier: the histogram observer clips it, a min/max observer would not
    ptq = prepare_ptq(copy.deepcopy(model), ex)
    with torch.no_grad():
        ptq(calib)
    gm, control = prepare_qat(copy.deepcopy(model), ex), prepare_qat(copy.deepcopy(model), ex)
    assert seed_activation_ranges(gm, ptq) == 3  # the inputs of both linears and the output: per-tensor affine
    with torch.no_grad():
        gm(calib)  # what a QAT step does first: the weight observers see the weights; seeded ranges stay
        assert torch.equal(convert_qat(copy.deepcopy(gm))(probe), convert_qat(ptq)(probe))  # lr 0 is ptq-int8

    def fake_quants(g):
        return {n: m for n, m in g.named_modules() if isinstance(m, FakeQuantizeBase)}

    def scales(g):
        return {n: m.scale.clone() for n, m in fake_quants(g).items()}

    with torch.no_grad():
        control(calib)  # its own moving min/max: wider than the histogram's range, which clipped the outlier
    before, unseeded = scales(gm), scales(control)
    assert unseeded["activation_post_process_0"] > before["activation_post_process_0"]
    for g in (gm, control):
        set_train(g, True)
        opt = torch.optim.SGD(g.parameters(), lr=0.5)
        for _ in range(3):
            g(5 * torch.randn(32, 8)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    after, moved = scales(gm), scales(control)
    for name, fq in fake_quants(gm).items():
        if fq.qscheme == torch.per_tensor_affine:  # activations: frozen here, moving in the unseeded copy
            assert torch.equal(after[name], before[name]) and not torch.equal(moved[name], unseeded[name]), name
        else:  # weights: still observed
            assert not torch.equal(after[name], before[name]), name


def test_qat_graph_in_train_form_computes_what_inference_does():
    """torchao's train/eval switch turns every dropout into p=0.5 (it matches the pattern ignoring literals), so
    `prepare_qat` strips them: a Dropout(p=0.0), as timm's MobileViT has 37 of, must not zero activations in QAT."""
    from compress.quant.pt2e import prepare_qat, set_train

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.0), torch.nn.Linear(16, 4)).eval()
    gm = prepare_qat(model, (torch.randn(2, 8),))
    assert not [n for n in gm.graph.nodes if "dropout" in str(n.target)]
    x = torch.randn(32, 8)
    set_train(gm, False)
    with torch.no_grad():
        evaluated = gm(x)
    set_train(gm, True)
    with torch.no_grad():
        trained = gm(x)
    torch.testing.assert_close(trained, evaluated, rtol=0, atol=1e-6)
