"""Apple Core ML through ExecuTorch's real Core ML backend and coremltools (no mocks): a tiny student exported with
`dcclip-compress export --target coreml` is a bundle `verify` accepts while saying it did not run the programs, a
damaged program is refused in one line, and `bench` says this host cannot time it instead of printing a number.

Int8 (`--quant int8`, CoreMLQuantizer's weight-only config) is not exported here: the quantizer's annotation alone
exports ~400 pattern graphs per tower (about 45 s on the 2-core host, whatever the model's size), past this file's
budget; the real run's acceptance export covers it (docs/ios.md)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from mobile_export.bench.host import delegate_backends
from mobile_export.lower.targets import get_target, list_targets
from tests.helpers import invoke, one_line_exit_2

NOT_RUN = "programs not run: this host has no Core ML runtime (macOS/iOS only)"


@pytest.fixture(scope="module")
def coreml_bundle(tmp_path_factory) -> Path:
    """A tiny student (1-block ViT, 1-layer text) exported through the real CLI to a Core ML bundle (fp32 weights,
    float16 compute), with a two-label .tsv."""
    from compress.model import DualEncoder, DualEncoderSpec, save_checkpoint
    from compress.tokenizer import BilingualTokenizer, train_tokenizer

    root = tmp_path_factory.mktemp("coreml")
    labels = root / "labels.tsv"
    labels.write_text("en\tzh\ndog face\t狗脸\nred apple\t红苹果\n", encoding="utf-8")
    words = ["an emoji of dog face", "an emoji of red apple", "狗脸的表情符号", "红苹果的表情符号"]
    tokenizer = BilingualTokenizer(train_tokenizer(words * 3, 120), 8)
    torch.manual_seed(0)
    model = DualEncoder(DualEncoderSpec(
        "vit_pico_p8", "text_pico", 16, 16, 8, tokenizer.vocab_size,
        image_spec={"family": "vit", "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 1, "mlp_ratio": 2.0},
        text_spec={"width": 16, "layers": 1, "heads": 1, "mlp_ratio": 2.0},
    ))
    save_checkpoint(model, tokenizer, root / "ckpt")
    records = _Records()  # what coremltools and the Core ML backend log during the export (they log a lot unquieted)
    logging.getLogger().addHandler(records)
    try:
        res = invoke(["export", str(root / "ckpt"), "--target", "coreml", "--out",  # no --quant: coreml's fp16 default
                      str(root / "bundle"), "--labels", str(labels)])
    finally:
        logging.getLogger().removeHandler(records)
    assert res.exit_code == 0, (res.output, res.exception)
    assert not records.lines, records.lines[:3]
    noise = [line for line in (res.output + res.stderr).splitlines() if line.startswith(("Converting", "Running MIL"))]
    assert not noise, noise  # nor do its progress bars
    return root / "bundle"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("coremltools", "executorch.backends.apple.coreml")):
            self.lines.append(f"{record.name}: {record.getMessage()[:100]}")


def test_coreml_is_a_listed_target_with_its_own_quantizer():
    assert list_targets()["coreml"] == "available"
    res = invoke(["targets"])
    assert res.exit_code == 0 and "coreml: available" in res.output
    t = get_target("coreml")
    assert t.own_quantizer and not t.runs_on_host and not t.int8_only and t.default_quant == "fp32"
    res = invoke(["export", "x", "--target", "coreml", "--quant", "8da4w"])  # its int8 is its own quantizer's
    assert res.exit_code == 2 and "use --quant int8 (or fp32), not 8da4w" in res.stderr
    assert "float16" in t.description and "float16" in t.precision("fp32") and "int8 weights" in t.precision("int8")


def test_export_writes_a_core_ml_bundle(coreml_bundle):
    from mobile_export.runtime import _runtime

    names = {p.relative_to(coreml_bundle).as_posix() for p in coreml_bundle.rglob("*") if p.is_file()}
    assert {"image_fp32.pte", "text_fp32.pte", "tokenizer.json", "preprocess.json", "bundle.json", "labels.json",
            "manifest.json", "parity/parity.json"} <= names
    assert not any(n.endswith((".bpte", ".f32")) and not n.startswith("parity/") for n in names)  # nothing ran them
    for tower in ("image", "text"):
        pte = coreml_bundle / f"{tower}_fp32.pte"
        assert delegate_backends(pte) == {"CoreMLBackend"}
        program = _runtime().load_program(str(pte))  # constant methods run without the delegate
        assert program.load_method("compute_precision").execute([])[0] == "float16"
        assert program.load_method("embed_dim").execute([])[0] == 16
    delegation = json.loads((coreml_bundle / "delegation.json").read_text())
    assert all(d["non_delegated_nodes"] <= 1 and not d["non_delegated_ops"] for d in delegation.values()), delegation
    bundle = json.loads((coreml_bundle / "bundle.json").read_text())
    assert bundle["target"] == "coreml" and bundle["precision"]["fp32"].startswith("float16 compute")
    manifest = json.loads((coreml_bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["programs"]["image_fp32.pte"]["precision"].startswith("float16 compute")
    labels = json.loads((coreml_bundle / "labels.json").read_text(encoding="utf-8"))
    assert [row["en"] for row in labels["labels"]] == ["dog face", "red apple"] and labels["embeddings"] == {}
    assert "on the device" in labels["embeddings_note"]
    parity = json.loads((coreml_bundle / "parity" / "parity.json").read_text(encoding="utf-8"))
    assert parity["quant"] == "eager-fp32" and "eager fp32" in parity["computed_with"]


def test_verify_accepts_it_and_says_the_programs_did_not_run(coreml_bundle):
    res = invoke(["verify", str(coreml_bundle)])
    assert res.exit_code == 0, res.output
    assert "image_fp32.pte: a well-formed coreml program" in res.output and NOT_RUN in res.output


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "wrong hash"])
def test_a_damaged_program_is_refused_in_one_line(coreml_bundle, tmp_path, damage):
    bundle = tmp_path / "bundle"
    shutil.copytree(coreml_bundle, bundle)
    pte = bundle / "image_fp32.pte"
    data = bytearray(pte.read_bytes())
    if damage == "truncated":
        pte.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
        pte.write_bytes(bytes(data))
    else:
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["files"]["image_fp32.pte"]["sha256"] = "0" * 64
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    line = one_line_exit_2(["verify", str(bundle)])
    assert "image_fp32.pte" in line and ("truncated" in line if damage == "truncated" else "sha256" in line), line


def test_bench_says_this_host_cannot_time_it(coreml_bundle, tmp_path):
    line = one_line_exit_2(["bench", str(coreml_bundle), "--out", str(tmp_path / "bench")])
    assert "coreml program" in line and NOT_RUN in line
    bare = tmp_path / "image.pte"  # outside its bundle: the program's own delegate says it
    shutil.copyfile(coreml_bundle / "image_fp32.pte", bare)
    line = one_line_exit_2(["bench", str(bare), "--out", str(tmp_path / "bench")])
    assert "CoreMLBackend" in line and "does not have" in line
