"""QAT's baselines at equal training (compress/pipeline/quantize.py, compress/quant/schemes.py): `ft-ptq-int8`
fine-tunes the fp32 towers with QAT's loop and then quantizes them like `ptq-int8`; the `qat.ptq_*` knobs choose
how every post-training calibration observes, and at their defaults change nothing (behaviour, fingerprints).
Real towers, real data, the real loop and torchao / ExecuTorch stacks; tiny sizes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.errors import UserError
from compress.pipeline.data import load_run_data
from compress.pipeline.quantize import fine_tune_fp32, quantize_scheme
from compress.pipeline.state import RunState
from compress.pipeline.student import build_student
from compress.quant.calibrate import BATCHES
from compress.quant.schemes import SCHEMES, PTQSettings, ptq_settings
from compress.recipe import load_recipe, parse_recipe
from compress.recipe.schema import QATConfig
from compress.tokenizer import BilingualTokenizer, tokenizer_corpus, train_tokenizer

# vit_pico_p8 / text_pico cut to one block each (arch: custom, students/spaces.py): every capture and calibration
# here is a real PT2E one, and fewer blocks keep the file fast
IMAGE_SPEC = {"family": "vit", "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}
TEXT_SPEC = {"family": "text", "width": 32, "layers": 1, "heads": 2, "mlp_ratio": 2.0}
ROOT = Path(__file__).resolve().parents[1]
# recipes/mobilevit_int8.yaml as it was before the S/K/U world (tests/data/), and the reference teacher's recipe
# with students.text.inventory none (the vocabulary from before issue 17's inventory, which changes every weight)
FINGERPRINTS = {"tests/data/mobilevit_int8_closed_set.yaml": "900bea425d44d07a",
                "recipes/emoji_teacher.yaml": "b04b9e2263294d04"}


def tiny_recipe(emoji_cache, **qat):
    return parse_recipe({
        "name": "qvp", "data": {"limit": 24, "image_size": 32, "train_renders": 2, "cache_dir": str(emoji_cache)},
        "students": {"image": {"arch": "custom", "spec": IMAGE_SPEC},
                     "text": {"arch": "custom", "spec": TEXT_SPEC, "context_length": 16, "vocab_size": 300},
                     "embed_dim": 16},
        "qat": {"batch_size": 8, "lr": 1e-3, "self_distill": 1.0, **qat},
        "training": {"mixed_precision": "no", "tensorboard": False},
    })


@pytest.fixture(scope="module")
def run(emoji_cache, tmp_path_factory):
    """The tiny run (qat.epochs 1, self_distill 1), its data, tokenizer, student, and the schemes it quantizes:
    ptq-int8 and ft-ptq-int8 at qat.epochs 0, ft-ptq-int8 at qat.epochs 1."""
    recipe = tiny_recipe(emoji_cache, epochs=1)
    data = load_run_data(recipe.data, recipe.seed)
    tok = BilingualTokenizer(train_tokenizer(tokenizer_corpus(data.train), 300), 16)
    model = build_student(recipe, tok)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()
    out = tmp_path_factory.mktemp("qvp")
    untrained = RunState(with_qat(recipe, epochs=0), out, resume=False, distributed=False)
    trained = RunState(recipe, out, resume=False, distributed=False)
    schemes = {"ptq-int8": quantize_scheme(untrained, data, model, tok, "ptq-int8", headline=False),
               "ft-ptq-int8 0": quantize_scheme(untrained, data, model, tok, "ft-ptq-int8", headline=False),
               "ft-ptq-int8 1": quantize_scheme(trained, data, model, tok, "ft-ptq-int8", headline=False)}
    return recipe, data, tok, model, trained, schemes


def outputs(q, tok, data) -> tuple[torch.Tensor, torch.Tensor]:
    from compress.data.augment import to_float

    with torch.no_grad():
        return q.image(to_float(data.train.images[:6])), q.text(tok(["an emoji of a cat", "猫", "red apple"]))


def with_qat(recipe, **update):
    return recipe.model_copy(update={"qat": recipe.qat.model_copy(update=update)})


def quantized_ops(gm) -> set[str]:
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function" and "quantize" in str(n.target)}


def test_ft_ptq_int8_at_zero_epochs_is_ptq_int8(run):
    _, data, tok, _, _, schemes = run
    ptq, ft = schemes["ptq-int8"], schemes["ft-ptq-int8 0"]
    for a, b in zip(outputs(ptq, tok, data), outputs(ft, tok, data)):
        assert torch.equal(a, b)
    assert ft.config["scheme"] == "ft-ptq-int8" and ft.config["post_training"]["scheme"] == "ptq-int8"
    assert "calibration" not in ptq.config  # default settings: the config every earlier run reported


def test_ft_ptq_int8_fine_tunes_fp32_like_qat_then_quantizes(run, tmp_path):
    recipe, data, tok, model, state, schemes = run
    ft = schemes["ft-ptq-int8 1"]
    assert state.history["qat-ft-ptq-int8"]["steps"] > 0  # QAT's loop ran, under QAT's stage naming
    assert not any((state.out / "checkpoints" / "qat-ft-ptq-int8").glob("*"))  # and cleaned up like QAT
    assert "quantized_decomposed.quantize_per_tensor.default" in quantized_ops(ft.image)
    assert "quantized_decomposed.quantize_per_tensor.default" in quantized_ops(ft.text)
    for a, b in zip(outputs(schemes["ft-ptq-int8 0"], tok, data), outputs(ft, tok, data)):
        assert not torch.equal(a, b)  # the fine-tuned weights were quantized, not the fp32 student's
    scratch = RunState(recipe, tmp_path, resume=False, distributed=False)
    image, text = fine_tune_fp32(scratch, data, model, tok, "qat-ft-ptq-int8")
    for tuned, fp32 in ((image, model.image), (text, model.text)):
        assert not tuned.training  # returned in eval form (BatchNorm, dropout as in inference)
        assert any(not torch.equal(p, q) for p, q in zip(tuned.parameters(), fp32.parameters()))
    assert scratch.history["qat-ft-ptq-int8"] == state.history["qat-ft-ptq-int8"] | {
        "seconds": scratch.history["qat-ft-ptq-int8"]["seconds"]}  # the same seed and batches: the same losses


@pytest.mark.parametrize("path", [*FINGERPRINTS, "recipes/mobilevit_int8.yaml"])
def test_ptq_knobs_at_defaults_keep_the_fingerprint(path):
    path, old = str(ROOT / path), ["students.text.inventory=none"]
    plain = load_recipe(path, old).fingerprint()
    assert plain == FINGERPRINTS.get(path.removeprefix(f"{ROOT}/"), plain)  # recipes from before the knobs
    explicit = ["qat.ptq_calibration_batches=4", "qat.ptq_observer=histogram", "qat.ptq_per_channel=null"]
    assert load_recipe(path, old + explicit).fingerprint() == plain
    for changed in ("qat.ptq_calibration_batches=16", "qat.ptq_observer=minmax", "qat.ptq_per_channel=true",
                    "qat.ptq_per_channel=false"):
        assert load_recipe(path, old + [changed]).fingerprint() != plain, changed


def test_ptq_knob_defaults_are_todays_calibration():
    assert ptq_settings(QATConfig()) == PTQSettings() and PTQSettings().batches == BATCHES
    assert SCHEMES["ptq-int8"].with_ptq(PTQSettings()) == SCHEMES["ptq-int8"]
    assert SCHEMES["int8"].with_ptq(PTQSettings(observer="minmax")) is SCHEMES["int8"]  # QAT's own graph: unchanged
    assert parse_recipe({"name": "x", "qat": {"scheme": "ft-ptq-int8", "compare": ["int8", "ptq-int8"]}})
    for bad, message in [({"ptq_calibration_batches": 0}, "ptq_calibration_batches"),
                         ({"ptq_observer": "percentile"}, "ptq_observer"), ({"ptq_per_channel": "yes"}, "ptq_per_channel")]:
        with pytest.raises(UserError, match=message) as err:
            parse_recipe({"name": "x", "qat": bad})
        assert "\n" not in str(err.value)


def test_observer_and_per_channel_change_the_calibrated_module():
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    ex, calib, probe = (torch.randn(2, 8),), torch.randn(64, 8), torch.randn(16, 8)
    calib[0, 0] = 30.0  # an outlier: the histogram observer clips it, min/max keeps it

    def calibrated(settings: PTQSettings, observer: type):
        scheme = SCHEMES["ptq-int8"].with_ptq(settings)
        gm = scheme.prepare(model, ex)
        activations = {type(m) for m in gm.children() if getattr(m, "qscheme", None) == torch.per_tensor_affine}
        assert activations == {observer}  # weights are symmetric: these are the activation observers
        with torch.no_grad():
            gm(calib)
        return scheme.convert(gm)

    default = calibrated(PTQSettings(), HistogramObserver)
    minmax = calibrated(PTQSettings(observer="minmax"), MinMaxObserver)
    channel = calibrated(PTQSettings(per_channel=True), HistogramObserver)
    with torch.no_grad():
        assert not torch.equal(default(probe), minmax(probe))
        assert not torch.equal(default(probe), channel(probe))
    assert not any("per_channel" in op for op in quantized_ops(default))  # no embedding: per-tensor linears today
    assert any("per_channel" in op for op in quantized_ops(channel))
