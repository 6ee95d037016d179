"""AdbDevice.run_demo_benchmark without a phone: a stand-in `adb` executable on PATH plays the phone (its shell
answers what `pm`, `am` and `run-as` would), and the results file is the layout the Java core writes (Latency.java)."""
from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import pytest

from compress.errors import UserError
from mobile_export.bench.adb import DEMO_ACTIVITY, AdbDevice, parse_demo_results

# What the app writes: minibench's entries for both towers in one list (Latency.minibenchJson, MainActivity.benchmark).
APP_RESULTS = [
    {"benchmarkModel": {"name": model, "backend": "xnnpack", "quantization": "int8"}, "metric": metric,
     "actualValue": value, "targetValue": 0.0, "deviceInfo": {"device": "fake"}}
    for model, base in (("image_int8", 4.0), ("text_int8", 1.0))
    for metric, value in (("model_load_time(ms)", 20 * base), ("avg_inference_latency(ms)", base),
                          ("trimmean_inference_latency(ms)", base), ("median_inference_latency(ms)", base),
                          ("p90_inference_latency(ms)", 1.5 * base), ("runs", 50.0))
]

FAKE_ADB = """#!/bin/sh
# Stand-in for adb: records each call, answers like a phone with the demo app installed.
echo "$*" >> "{log}"
[ "$1" = "-s" ] && shift 2
case "$*" in
  devices) printf 'List of devices attached\\nphone-1\\tdevice\\n' ;;
  "shell pm list packages org.dcclip.demo") if [ -n "{installed}" ]; then echo "package:org.dcclip.demo"; fi ;;
  "shell am start"*) cp "{results}" "{state}" ;;
  "shell run-as org.dcclip.demo cat files/dcclip_bench.json") cat "{state}" 2>/dev/null || echo "No such file" ;;
  "shell run-as org.dcclip.demo rm -f files/dcclip_bench.json") rm -f "{state}" ;;
  *) ;;
esac
"""


def fake_adb(tmp_path: Path, monkeypatch, installed: bool = True) -> Path:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(APP_RESULTS))
    log = tmp_path / "adb.log"
    script = tmp_path / "bin" / "adb"
    script.parent.mkdir()
    script.write_text(FAKE_ADB.format(log=log, results=results, state=tmp_path / "state.json", installed="1" if installed else ""))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return log


def test_demo_benchmark_starts_the_app_and_reads_both_towers(tmp_path, monkeypatch):
    log = fake_adb(tmp_path, monkeypatch)
    result = AdbDevice(timeout_s=10).run_demo_benchmark(iters=7)
    assert set(result) == {"image_int8", "text_int8"}
    assert result["image_int8"]["median_inference_latency(ms)"] == 4.0
    assert result["text_int8"]["model_load_time(ms)"] == 20.0
    calls = log.read_text().splitlines()
    assert any(f"am start -W -S -n {DEMO_ACTIVITY} --ei bench_iters 7" in c for c in calls)


def test_demo_benchmark_without_the_app_is_one_line(tmp_path, monkeypatch):
    fake_adb(tmp_path, monkeypatch, installed=False)
    with pytest.raises(UserError, match="org.dcclip.demo is not installed.*make android"):
        AdbDevice(timeout_s=10).run_demo_benchmark()


def test_parse_demo_results_groups_by_model_and_rejects_garbage():
    grouped = parse_demo_results(json.dumps(APP_RESULTS))
    assert grouped["text_int8"]["p90_inference_latency(ms)"] == 1.5
    with pytest.raises(UserError, match="not JSON"):
        parse_demo_results("[{oops")


def test_bytes_that_are_not_utf8_from_the_device_are_no_traceback(tmp_path, monkeypatch):
    """issue 19: adb output is bytes of unknown encoding (a vendor build's locale, a binary cat)."""
    fake_adb(tmp_path, monkeypatch)
    script = tmp_path / "bin" / "adb"
    script.write_text(script.read_text().replace(
        "devices) printf 'List of devices attached\\nphone-1\\tdevice\\n' ;;",
        "devices) printf 'List of devices \\377\\376 attached\\nphone-1\\tdevice\\n' ;;"))
    assert "\\377" in script.read_text()
    assert AdbDevice(timeout_s=10).serial == "phone-1"



# ------------------------------------------------------------------------------------------------- bench --demo
def _fake_pte(path: Path) -> None:
    """The fixed-size start of an ExecuTorch program (enough for mobile_export.pte_check): root offset, ET12, eh00."""
    head = struct.pack("<I", 40) + b"ET12" + b"eh00" + struct.pack("<IQQQ", 32, 64, 0, 0)
    path.write_bytes(head + bytes(64 - len(head)))


def _bundle(tmp_path: Path) -> Path:
    b = tmp_path / "bundle"
    b.mkdir()
    files = {q: {"image": f"image_{q}.pte", "text": f"text_{q}.pte"} for q in ("fp32", "int8", "8da4w")}
    (b / "bundle.json").write_text(json.dumps({"files": files}))
    (b / "tokenizer.json").write_text("{}")
    for q in files:
        for t in ("image", "text"):
            _fake_pte(b / f"{t}_{q}.pte")
    return b


def test_bench_demo_pushes_what_the_app_loads_and_reports_its_int8_towers(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from compress.cli import main

    log = fake_adb(tmp_path, monkeypatch)
    bundle = _bundle(tmp_path)
    res = CliRunner().invoke(main, ["bench", str(bundle), "--device", "adb", "--demo", "--runs", "7", "--warmup", "2",
                                    "--out", str(tmp_path / "report"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report" / "bench.json").read_text())
    assert [m["model"] for m in report["models"]] == ["image_int8", "text_int8"]
    image = report["models"][0]
    assert image["methods"][0]["median_inference_latency(ms)"] == 4.0 and image["methods"][0]["runs"] == 50
    assert image["path"] == str(bundle / "image_int8.pte") and "demo app" in image["notes"][0]
    assert report["device"]["name"] == "adb:phone-1"
    calls = log.read_text().splitlines()
    pushed = [c.split()[3] for c in calls if c.startswith("-s phone-1 push ")]
    assert sorted(Path(p).name for p in pushed) == ["bundle.json", "image_int8.pte", "text_int8.pte", "tokenizer.json"]
    assert any(f"am start -W -S -n {DEMO_ACTIVITY} --ei bench_iters 7 --ei bench_warmup 2" in c for c in calls)


def test_bench_demo_needs_a_phone_and_a_bundle_folder(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from compress.cli import main

    fake_adb(tmp_path, monkeypatch)
    bundle = _bundle(tmp_path)
    for args, want in ((["--device", "host"], "pass --device adb[:SERIAL], not 'host'"),
                       (["--device", "adb", "--threads", "2"], "--threads does not reach the demo app")):
        res = CliRunner().invoke(main, ["bench", str(bundle), "--demo", *args])
        assert res.exit_code == 2 and want in res.output and res.output.count("\n") == 1, res.output
    res = CliRunner().invoke(main, ["bench", str(bundle / "image_int8.pte"), "--device", "adb", "--demo"])
    assert res.exit_code == 2 and "is not a bundle folder" in res.output


def test_demo_results_that_are_not_minibench_entries_are_one_line():
    with pytest.raises(UserError, match="not a JSON list"):
        parse_demo_results('{"metric": 1}')
    assert parse_demo_results('[{"metric": "runs", "actualValue": 5}, 7, {"x": 1}]') == {"model": {"runs": 5}}
