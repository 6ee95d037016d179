"""Arm Ethos-U through the real Arm backend, TOSA and Vela (no mocks): a tiny student's two towers lower to U85 with
Vela's estimate read back from the `.pte`, `bench --device vela` reports it in the bench schema, and a Vela process
that dies by a signal becomes a one-line error instead of taking the CLI down."""
from __future__ import annotations

import signal

import pytest
import torch

from compress.errors import UserError
from mobile_export.bench.run import run_bench
from mobile_export.bench.schema import BenchReport
from mobile_export.bench.vela import read_estimate
from mobile_export.lower import ethosu
from mobile_export.lower.capture import save_pte
from mobile_export.lower.targets import get_target, list_targets
from students.image import ImageTower
from students.text import TextTower

SIZE, CONTEXT, VOCAB = 16, 8, 64


def tiny_towers() -> dict[str, tuple[torch.nn.Module, tuple, list]]:
    """The student families at their smallest: a 1-block ViT and a 1-layer text transformer (the Arm pass pipeline
    costs time per node, so tiny keeps the test short)."""
    torch.manual_seed(0)
    image = ImageTower("vit_tiny_patch16_224", 16, SIZE, timm_kwargs=dict(patch_size=8, embed_dim=16, depth=1, num_heads=1))
    text = TextTower(VOCAB, 16, CONTEXT, width=16, layers=1, heads=1)
    ids = torch.randint(1, VOCAB, (4, CONTEXT), generator=torch.Generator().manual_seed(1))
    ids[:, CONTEXT // 2:] = 0
    return {
        "image": (image.eval(), (torch.rand(1, 3, SIZE, SIZE),), [(torch.rand(4, 3, SIZE, SIZE),)]),
        "text": (text.eval(), (ids[:1],), [(ids,)]),
    }


@pytest.fixture(scope="module")
def u85_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ethos-u85")
    target = get_target("ethos-u85")  # the backend's own quantizer and lowering, behind the target table
    programs = {}
    for tower, (module, ex, calibration) in tiny_towers().items():
        q = target.quantize(module, ex, calibration)
        program = target.lower(q, ex, {"image_size": SIZE}, what=f"the {tower} tower",
                               artifacts=folder / target.artifacts_name / tower)
        save_pte(program, folder / f"{tower}_int8.pte")
        programs[tower] = program
    return folder, programs


def test_targets_listed_as_available():
    targets = list_targets()
    assert targets["ethos-u55"] == "available" and targets["ethos-u85"] == "available"
    assert targets["qnn"].startswith("not installed")  # SDKs that do not come from PyPI keep saying what is missing
    u85 = get_target("ethos-u85")
    assert u85.int8_only and u85.own_quantizer and not u85.runs_on_host


def test_u85_export_both_towers_with_vela_estimate(u85_export):
    folder, programs = u85_export
    for tower, program in programs.items():
        d = program.delegation
        assert d["delegated_subgraphs"] >= 1 and d["delegated_nodes"] > 0
        # only I/O (de)quantisation and the int64 id cast stay on the CPU: every layer is on the NPU
        assert set(d["non_delegated_ops"]) <= {"quantized_decomposed_quantize_per_tensor_default",
                                              "quantized_decomposed_dequantize_per_tensor_default",
                                              "dim_order_ops__to_dim_order_copy_default"}, d["non_delegated_ops"]
        est = program.estimate
        assert est["accelerator"] == "ethos-u85-256" and est["cycles"] > 0 and est["inference_time_ms"] > 0
        assert est["nn_macs"] > 0 and est["ops"] and (folder / "vela" / tower / "partition_0" / "vela.log").is_file()
        back = read_estimate(folder / f"{tower}_int8.pte")  # stored in the .pte itself
        assert back["cycles"] == est["cycles"] and len(back["ops"]) == len(est["ops"])
        assert sum(o["cycles"] for o in back["ops"]) > 0


def test_bench_device_vela_reports_the_estimate_in_the_bench_schema(u85_export):
    folder, programs = u85_export
    report = run_bench(folder / "image_int8.pte", device="vela")
    BenchReport.model_validate(report.model_dump(by_alias=True))
    (model,) = report.models
    (method,) = model.methods
    assert method.source == "estimate" and report.device.name == "vela"
    assert method.median_ms == pytest.approx(programs["image"].estimate["inference_time_ms"])
    assert model.top_ops and model.top_ops[0].median_ms > 0


def test_vela_on_a_non_ethos_pte_is_a_one_line_error(tmp_path):
    from mobile_export.lower.targets import lower_to_pte

    save_pte(lower_to_pte(torch.nn.Linear(4, 4), (torch.rand(1, 4),)), tmp_path / "x.pte")
    with pytest.raises(UserError, match="no Vela estimate"):
        read_estimate(tmp_path / "x.pte")


def test_vela_dying_by_a_signal_is_an_error_not_a_dead_process(tmp_path, monkeypatch):
    """The child process really dies by SIGSEGV, as Vela 5.1 does on MobileViT attention for U55 (a real U55
    MobileViT lowering takes minutes here, and a tiny 1-head MobileViT-like block does not reproduce the crash)."""
    monkeypatch.setattr(ethosu, "_VELA_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    runs = ethosu.VelaRuns(tmp_path)
    with pytest.raises(ethosu.VelaCrash) as crash:
        ethosu._SubprocessVela(runs).main(["--accelerator-config=ethos-u55-128", f"--output-dir={tmp_path}/o", "x.tosa"])
    assert crash.value.signum == signal.SIGSEGV
    wrapped = RuntimeError("backend preprocess failed")
    wrapped.__cause__ = crash.value  # how ExecuTorch's backend API hands it up
    err = ethosu.vela_user_error(wrapped, "the image tower (mobilevit_xxs)", "ethos-u55-128")
    assert isinstance(err, UserError)
    msg = str(err)
    assert "\n" not in msg and "SIGSEGV" in msg and "mobilevit_xxs" in msg and "ethos-u85" in msg


def test_u85_export_manifest_lets_verify_catch_a_damaged_copy(u85_export, tmp_path):
    """An NPU export gets manifest.json like a host bundle: `verify` passes on it (structure and hashes; the samples
    need the NPU) and fails with a one-line error once a program is altered."""
    import shutil

    from click.testing import CliRunner

    from compress.cli import main
    from mobile_export.bundle.write import write_npu_manifest

    folder, programs = u85_export
    bundle = tmp_path / "bundle"
    shutil.copytree(folder, bundle)
    for name in ("bundle.json", "tokenizer.json", "preprocess.json"):  # what export writes beside the programs
        (bundle / name).write_text("{}")
    files = {tower: f"{tower}_int8.pte" for tower in programs}
    write_npu_manifest(bundle, {"image_size": SIZE}, "ethos-u85", files, {t: p.estimate for t, p in programs.items()})
    res = CliRunner().invoke(main, ["verify", str(bundle)])
    assert res.exit_code == 0, res.output
    assert "image_int8.pte: a well-formed ethos-u85 program" in res.output and "text_int8.pte" in res.output
    data = bytearray((bundle / "image_int8.pte").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "image_int8.pte").write_bytes(bytes(data))
    res = CliRunner().invoke(main, ["verify", str(bundle)])
    assert res.exit_code == 2 and "sha256" in res.output and len(res.output.strip().splitlines()) == 1, res.output
