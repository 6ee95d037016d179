"""The phone boundary: one small `Device` interface, implemented over adb (a real phone running ExecuTorch's
Android benchmark app, "minibench") and over the host's own ExecuTorch runtime. Nothing else in the project
talks to adb, so phone-specific failure modes stay in this file and surface as one-line `UserError`s.
"""
from __future__ import annotations

import json
import os
import posixpath
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from compress.errors import UserError

MINIBENCH_PACKAGE = "org.pytorch.minibench"
MINIBENCH_ACTIVITY = f"{MINIBENCH_PACKAGE}/{MINIBENCH_PACKAGE}.BenchmarkActivity"
MINIBENCH_RESULTS = "files/benchmark_results.json"
DEMO_PACKAGE = "org.dcclip.demo"  # android_demo/: its benchmark writes minibench's layout for both towers
DEMO_ACTIVITY = f"{DEMO_PACKAGE}/.MainActivity"
DEMO_RESULTS = "files/dcclip_bench.json"


@runtime_checkable
class Device(Protocol):
    """Somewhere a `.pte` can be copied to and timed. Results use minibench's metric names."""

    name: str

    def push(self, local: str | os.PathLike, remote: str) -> None: ...

    def run_benchmark(self, pte_remote: str, runs: int) -> dict[str, Any]: ...


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
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or 120)
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


class LocalDevice:
    """A device whose "phone filesystem" is a local folder (or the real paths): the host runtime and Vela's estimate."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else None

    def _path(self, remote: str) -> Path:
        return self.root / remote.lstrip("/") if self.root is not None else Path(remote)

    def push(self, local: str | os.PathLike, remote: str) -> None:
        target = self._path(remote)
        if target.resolve() != Path(local).resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)


class HostDevice(LocalDevice):
    """This machine's ExecuTorch runtime behind the same interface (CI, and phone-less comparisons)."""

    name = "host"

    def __init__(self, root: str | os.PathLike | None = None, inputs: tuple[torch.Tensor, ...] | None = None) -> None:
        """`root`: folder that plays the phone's filesystem (None: remote paths are local paths). `inputs`: what to
        time with; by default all-ones inputs of the exported shapes, as minibench does."""
        super().__init__(root)
        self.inputs = inputs

    def run_benchmark(self, pte_remote: str, runs: int) -> dict[str, Any]:
        from mobile_export.bench.run import host_latency
        from mobile_export.runtime import PteModule

        path = self._path(pte_remote)
        inputs = self.inputs if self.inputs is not None else PteModule(path).default_inputs()
        return host_latency(path, inputs, runs=runs)
