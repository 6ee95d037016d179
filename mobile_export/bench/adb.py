"""The phone boundary: an Android phone over adb, timed by ExecuTorch's Android benchmark app ("minibench") or by
the demo app (android_demo/). Nothing else in the project talks to adb, so phone-specific failure modes stay in this
file and surface as one-line `UserError`s.

`bench --device adb[:SERIAL]` (`run_adb`) and the search's latency measurer (compress.search.latency) both time a
program through `time_on_phone`.
"""
from __future__ import annotations

import json
import os
import posixpath
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from compress.atomic import sha256_file
from compress.errors import UserError
from mobile_export.bench.schema import BenchRun, BenchSettings, DeviceInfo, MethodLatency, ModelResult, tensor_specs
from mobile_export.runtime import PteModule

MINIBENCH_PACKAGE = "org.pytorch.minibench"
MINIBENCH_ACTIVITY = f"{MINIBENCH_PACKAGE}/{MINIBENCH_PACKAGE}.BenchmarkActivity"
MINIBENCH_RESULTS = "files/benchmark_results.json"
DEMO_PACKAGE = "org.dcclip.demo"  # android_demo/: its benchmark writes minibench's layout for both towers
DEMO_ACTIVITY = f"{DEMO_PACKAGE}/.MainActivity"
DEMO_RESULTS = "files/dcclip_bench.json"


class AdbDevice:
    """An Android phone over adb, timed by ExecuTorch's minibench app (`org.pytorch.minibench`, installed
    separately). Minibench benchmarks the first `.pte` in a folder, so each model gets its own remote folder."""

    def __init__(self, serial: str | None = None, timeout_s: float = 300.0) -> None:
        adb = shutil.which("adb")
        if adb is None:
            raise UserError("device: adb is not on PATH; install Android platform-tools or use the host device")
        self._adb = adb
        self.serial: str | None = None  # unset while listing devices
        self.serial = self._pick_device(serial)
        self.name = f"adb:{self.serial}"
        self.timeout_s = timeout_s

    def _run(self, *args: str, check: bool = True, timeout: float | None = None) -> str:
        cmd = [self._adb, *(["-s", self.serial] if self.serial else []), *args]
        try:
            # a phone's output is bytes of unknown encoding: undecodable ones become U+FFFD, never a traceback
            proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout or 120)
        except subprocess.TimeoutExpired:
            raise UserError(f"device: `adb {' '.join(args)}` timed out") from None
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise UserError(f"device: `adb {' '.join(args)}` failed: {detail[-1] if detail else proc.returncode}")
        return proc.stdout

    def _pick_device(self, serial: str | None) -> str:
        lines = self._run("devices").splitlines()[1:]
        ready = [line.split()[0] for line in lines if line.strip().endswith("\tdevice")]
        if not ready:
            raise UserError("device: no Android device attached (`adb devices` lists none in state 'device')")
        if serial is not None:
            if serial not in ready:
                raise UserError(f"device: {serial!r} is not attached; attached: {', '.join(ready)}")
            return serial
        if len(ready) > 1:
            raise UserError(f"device: {len(ready)} devices attached ({', '.join(ready)}); pass a serial")
        return ready[0]

    def push(self, local: str | os.PathLike, remote: str) -> None:
        if not Path(local).is_file():
            raise UserError(f"device: {str(local)!r} does not exist")
        self._run("shell", "mkdir", "-p", posixpath.dirname(remote) or "/")
        self._run("push", str(local), remote, timeout=600)

    def info(self) -> dict[str, Any]:
        """Phone model, Android version, ABI, SoC and core count (for bench reports)."""
        props = {key: self._run("shell", "getprop", prop, check=False).strip() or None for key, prop in (
            ("model", "ro.product.model"), ("manufacturer", "ro.product.manufacturer"),
            ("android", "ro.build.version.release"), ("abi", "ro.product.cpu.abi"), ("soc", "ro.soc.model"))}
        cores = self._run("shell", "nproc", check=False).strip()
        return {**props, "os": f"Android {props['android']}" if props["android"] else None,
                "cores": int(cores) if cores.isdigit() else None}

    def _results(self) -> str | None:
        out = self._run("shell", "run-as", MINIBENCH_PACKAGE, "cat", MINIBENCH_RESULTS, check=False)
        return out if out.lstrip().startswith("[") else None

    def run_benchmark(self, pte_remote: str, runs: int) -> dict[str, Any]:
        """Start minibench on the `.pte`'s folder, wait for its results file, return metric -> value."""
        packages = self._run("shell", "pm", "list", "packages", MINIBENCH_PACKAGE)
        if f"package:{MINIBENCH_PACKAGE}" not in packages:
            raise UserError(f"device: {MINIBENCH_PACKAGE} is not installed on {self.serial} "
                            "(build it from executorch/extension/benchmark/android/benchmark)")
        folder = posixpath.dirname(pte_remote)
        ptes = [p for p in self._run("shell", "ls", folder, check=False).split() if p.endswith(".pte")]
        if ptes != [posixpath.basename(pte_remote)]:
            raise UserError(f"device: {folder} must hold exactly {posixpath.basename(pte_remote)} (minibench times "
                            f"the first .pte it finds); it holds: {', '.join(ptes) or 'nothing'}")
        self._run("shell", "run-as", MINIBENCH_PACKAGE, "rm", "-f", MINIBENCH_RESULTS, check=False)
        self._run("shell", "am", "start", "-W", "-S", "-n", MINIBENCH_ACTIVITY,
                  "--es", "model_dir", folder, "--ei", "num_iter", str(runs))
        deadline = time.monotonic() + self.timeout_s
        while (raw := self._results()) is None:
            if time.monotonic() > deadline:
                raise UserError(f"device: minibench wrote no results within {self.timeout_s:.0f}s")
            time.sleep(1.0)
        return parse_minibench_results(raw)

    def run_demo_benchmark(self, iters: int = 50) -> dict[str, dict[str, Any]]:
        """Time both towers in the Android demo app (android_demo/, package org.dcclip.demo) on the bundle it holds
        (assets, or pushed to its files/bundle/); return {model: metric -> value} with `bench`'s field names."""
        packages = self._run("shell", "pm", "list", "packages", DEMO_PACKAGE)
        if f"package:{DEMO_PACKAGE}" not in packages:
            raise UserError(f"device: {DEMO_PACKAGE} is not installed on {self.serial} (make android, then adb install "
                            "android_demo/build/dcclip-demo.apk)")
        self._run("shell", "run-as", DEMO_PACKAGE, "rm", "-f", DEMO_RESULTS, check=False)
        self._run("shell", "am", "start", "-W", "-S", "-n", DEMO_ACTIVITY, "--ei", "bench_iters", str(iters))
        deadline = time.monotonic() + self.timeout_s
        while True:
            raw = self._run("shell", "run-as", DEMO_PACKAGE, "cat", DEMO_RESULTS, check=False)
            if raw.lstrip().startswith("["):
                return parse_demo_results(raw)
            if time.monotonic() > deadline:
                raise UserError(f"device: the demo app wrote no benchmark within {self.timeout_s:.0f}s "
                                f"(adb logcat -s dcclip shows why)")
            time.sleep(1.0)


def parse_demo_results(raw: str) -> dict[str, dict[str, Any]]:
    """The demo app writes minibench's layout for both towers in one list; group the metrics by model name."""
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"device: demo app results are not JSON ({e.msg})") from None
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        if "metric" in e:
            out.setdefault(e.get("benchmarkModel", {}).get("name", "model"), {})[e["metric"]] = e["actualValue"]
    return out


def parse_minibench_results(raw: str) -> dict[str, Any]:
    """minibench writes a JSON list of {benchmarkModel, metric, actualValue, ...}; flatten to metric -> value."""
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"device: minibench results are not JSON ({e.msg})") from None
    metrics = {e["metric"]: e["actualValue"] for e in entries if "metric" in e}
    if metrics.get("load_status", 0) != 0:
        raise UserError(f"device: minibench failed to load the model (load_status {metrics['load_status']:.0f})")
    return metrics


def time_on_phone(device: AdbDevice, path: Path, runs: int,
                  root: str = "/data/local/tmp/dcclip-bench") -> dict[str, Any]:
    """Push one `.pte` into its own folder under `root` (minibench times the only .pte in a folder) and time it with
    minibench; metric -> value."""
    remote = f"{root}/{path.stem}/{path.name}"
    device.push(path, remote)
    return device.run_benchmark(remote, runs)


def run_adb(arg: str | None, programs: list[Path], settings: BenchSettings) -> BenchRun:
    """An Android phone timed by ExecuTorch's minibench app, through `AdbDevice`."""
    device = AdbDevice(arg)
    models = []
    for path in programs:
        metrics = time_on_phone(device, path, settings.runs)
        module = PteModule(path)
        models.append(ModelResult(
            model=path.stem, path=str(path), bytes=path.stat().st_size, sha256=sha256_file(path),
            methods=[MethodLatency(
                method="forward", inputs=tensor_specs(module.default_inputs()),
                load_status=int(metrics.get("load_status", 0)),
                runs=settings.runs, **{k: metrics.get(k) for k in (
                    "model_load_time(ms)", "avg_inference_latency(ms)", "trimmean_inference_latency(ms)")},
            )],
            top_ops=None,
            notes=["minibench runs its own warm-up and thread count; it reports mean and trimmed mean only"],
            **{"ram_pss_usage(mb)": metrics.get("ram_pss_usage(mb)")},
        ))
    info = device.info()
    return BenchRun(DeviceInfo(name=device.name, kind="adb", model=info.get("model"), os=info.get("os"),
                               abi=info.get("abi"), cores=info.get("cores"), extra=info), models)
