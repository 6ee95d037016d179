"""The phone boundary: an Android phone over adb, timed by ExecuTorch's Android benchmark app ("minibench") or by
the demo app (android_demo/). Nothing else in the project talks to adb, so phone-specific failure modes stay in this
file and surface as one-line `UserError`s.

`bench --device adb[:SERIAL]` (`run_adb`) and the search's latency measurer (compress.search.latency) both time a
program through `time_on_phone`. `bench BUNDLE --device adb[:SERIAL] --demo` (`run_adb_demo`) pushes the files the
demo app loads and times its int8 towers inside the app.
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
DEMO_BUNDLE = f"/sdcard/Android/data/{DEMO_PACKAGE}/files/bundle"  # wins over the APK's assets (AndroidBundle.find)
DEMO_METRICS = ("model_load_time(ms)", "avg_inference_latency(ms)", "trimmean_inference_latency(ms)",
                "median_inference_latency(ms)", "p90_inference_latency(ms)")


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

    def _check_demo_installed(self) -> None:
        packages = self._run("shell", "pm", "list", "packages", DEMO_PACKAGE)
        if f"package:{DEMO_PACKAGE}" not in packages:
            raise UserError(f"device: {DEMO_PACKAGE} is not installed on {self.serial} (make android with the ExecuTorch "
                            "AAR, then adb install android_demo/build/dcclip-demo.apk; docs/android.md)")

    def push_demo_bundle(self, folder: Path) -> list[str]:
        """Replace the bundle pushed to the demo app with the files it loads from `folder` (the int8 scheme's .pte pair
        when there, mobile_export.bundle.android.app_assets); returns their names on the phone."""
        from mobile_export.bundle.android import app_assets

        try:
            pairs = app_assets(folder)
        except ValueError as e:
            raise UserError(f"bench: {e}") from None
        self._check_demo_installed()
        self._run("shell", "rm", "-rf", DEMO_BUNDLE, check=False)
        for src, dst in pairs:
            self.push(Path(folder) / src, f"{DEMO_BUNDLE}/{dst}")
        return [dst for _, dst in pairs]

    def run_demo_benchmark(self, iters: int = 50, warmup: int | None = None) -> dict[str, dict[str, Any]]:
        """Time both towers in the Android demo app (android_demo/, package org.dcclip.demo) on the bundle it holds
        (assets, or pushed to its files/bundle/): `iters` timed calls after `warmup` untimed ones (the app's default:
        3); return {model: metric -> value} with `bench`'s field names."""
        self._check_demo_installed()
        self._run("shell", "run-as", DEMO_PACKAGE, "rm", "-f", DEMO_RESULTS, check=False)
        self._run("shell", "am", "start", "-W", "-S", "-n", DEMO_ACTIVITY, "--ei", "bench_iters", str(iters),
                  *(("--ei", "bench_warmup", str(warmup)) if warmup is not None else ()))
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
    if not isinstance(entries, list):
        raise UserError("device: demo app results are not a JSON list of minibench entries")
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        if isinstance(e, dict) and "metric" in e:
            model = e.get("benchmarkModel")
            name = model.get("name", "model") if isinstance(model, dict) else "model"
            out.setdefault(str(name), {})[str(e["metric"])] = e.get("actualValue")
    return out


def run_adb_demo(arg: str | None, programs: list[Path], settings: BenchSettings) -> BenchRun:
    """`bench BUNDLE --device adb[:SERIAL] --demo`: push the files the demo app loads from BUNDLE to the app, start its
    benchmark (`settings.runs` timed calls per tower after `settings.warmup`), read its results back."""
    bundle = programs[0].parent if programs else None
    if bundle is None or not (bundle / "bundle.json").is_file() or any(p.parent != bundle for p in programs):
        raise UserError("bench: --demo times an export bundle inside the Android demo app; pass the bundle folder")
    device = AdbDevice(arg)
    device.push_demo_bundle(bundle)
    results = device.run_demo_benchmark(settings.runs, settings.warmup)
    by_stem = {p.stem: p for p in programs}
    models = []
    for name, metrics in results.items():
        path = by_stem.get(name)
        if path is None:
            raise UserError(f"device: the demo app timed {name!r}, which {str(bundle)!r} does not hold (an old bundle on "
                            f"the phone?); its programs: {', '.join(sorted(by_stem))}")
        values = {k: metrics.get(k) for k in DEMO_METRICS}
        if not all(isinstance(v, (int, float)) for v in values.values()):
            lacking = [k for k, v in values.items() if not isinstance(v, (int, float))]
            raise UserError(f"device: the demo app's results for {name} lack {', '.join(lacking)}")
        runs = metrics.get("runs")
        models.append(ModelResult(
            model=name, path=str(path), bytes=path.stat().st_size, sha256=sha256_file(path),
            methods=[MethodLatency(method="forward", load_status=0,
                                   runs=int(runs) if isinstance(runs, (int, float)) else settings.runs, **values)],
            top_ops=None,
            notes=[f"timed inside the demo app ({DEMO_PACKAGE}): Java wall time around Module.forward, input and output "
                   f"copies included, after {settings.warmup} warm-up calls"],
        ))
    if not models:
        raise UserError("device: the demo app's results name no program (adb logcat -s dcclip shows why)")
    info = device.info()
    return BenchRun(DeviceInfo(name=device.name, kind="adb", model=info.get("model"), os=info.get("os"),
                               abi=info.get("abi"), cores=info.get("cores"),
                               extra={**info, "runner": f"{DEMO_PACKAGE} (android_demo/)"}), models)


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
