"""Latency reports for `.pte` programs, on this host, on a phone or from a compiler's estimate
(`dcclip-compress bench`).

`bench` takes an export bundle (every program in it) or a bare `.pte` from anywhere: inputs come from the method's
own metadata, all-ones tensors of the exported shapes and dtypes, as minibench feeds them. Where the numbers come from
is a small registry of device runners (`@register_device`): `host` (bench/host.py), `adb[:SERIAL]` (bench/adb.py)
and `vela` (bench/vela.py); each returns a `BenchRun` of the same `ModelResult`s (bench/schema.py).

Output: `BenchReport` as bench.json, a markdown table (bench.md) and a chart (bench.png): bench/report.py.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

from compress.errors import UserError, did_you_mean
from compress.readers import field, read_json
from mobile_export.bench.adb import run_adb, run_adb_demo
from mobile_export.bench.host import run_host
from mobile_export.bench.schema import BenchReport, BenchRun, BenchSettings
from mobile_export.bench.vela import bench_vela
from mobile_export.pte_check import check_pte


def collect_programs(target: Path) -> list[Path]:
    """A bare `.pte`, or every program an export bundle lists (bundle.json / manifest.json), else its *.pte."""
    if target.is_file() or target.suffix == ".pte":
        check_pte(target)
        return [target]
    if not target.is_dir():
        raise UserError(f"bench: {str(target)!r} not found; pass a .pte or an export bundle folder")
    names: list[str] = []
    manifest, bundle = target / "manifest.json", target / "bundle.json"
    what, fix = "bench: bundle description", "re-export the bundle"
    if manifest.is_file():
        names = [str(n) for n in field(read_json(manifest, what, fix), "programs", dict, manifest, what, fix, {})]
    if not names and bundle.is_file():
        files = field(read_json(bundle, what, fix), "files", dict, bundle, what, fix, {})
        if not all(isinstance(t, dict) and all(isinstance(n, str) for n in t.values()) for t in files.values()):
            raise UserError(f"bench: {str(bundle)!r}: \"files\" must map each quantization to its .pte names; {fix}")
        names = [n for towers in files.values() for n in towers.values()]
    if not names:
        names = sorted(p.name for p in target.glob("*.pte"))
    if not names:
        raise UserError(f"bench: {str(target)!r} holds no .pte; pass a .pte or an export bundle folder")
    paths = [target / n for n in names]
    for p in paths:
        check_pte(p)
    return paths


DeviceRunner = Callable[[str | None, list[Path], BenchSettings], BenchRun]
DEVICES: dict[str, DeviceRunner] = {}


def register_device(name: str) -> Callable[[DeviceRunner], DeviceRunner]:
    """Decorator: `fn(arg, programs, settings) -> BenchRun` answers `--device NAME[:ARG]`."""

    def wrap(fn: DeviceRunner) -> DeviceRunner:
        DEVICES[name] = fn
        return fn

    return wrap


def parse_device(spec: str) -> tuple[str, str | None]:
    name, _, arg = spec.partition(":")
    if name not in DEVICES:
        raise UserError(f"bench: {spec!r} is not a known device; "
                        f"{did_you_mean(name, [n + ('[:SERIAL]' if n == 'adb' else '') for n in DEVICES])}")
    return name, arg or None


register_device("host")(run_host)  # this machine's ExecuTorch runtime
register_device("adb")(run_adb)  # an Android phone timed by minibench
register_device("vela")(bench_vela)  # Arm Ethos-U: Vela's cycle estimate stored in the .pte at export
register_device("adb-demo")(run_adb_demo)  # the Android demo app's own benchmark (`bench --demo`)


def demo_device(device: str, target: Path, threads: int | None) -> str:
    """`bench --device adb[:SERIAL] --demo` -> the `adb-demo[:SERIAL]` runner, or one line on what does not fit."""
    name, sep, serial = device.partition(":")
    if name != "adb":
        raise UserError(f"bench: --demo times the Android demo app on a phone; pass --device adb[:SERIAL], not {device!r}")
    if not Path(target).is_dir():
        raise UserError(f"bench: --demo times an export bundle inside the demo app; {str(target)!r} is not a bundle folder")
    if threads is not None:
        raise UserError("bench: --threads does not reach the demo app (ExecuTorch's default thread pool); drop it")
    return f"adb-demo{sep}{serial}"


def run_bench(target: Path, device: str = "host", runs: int = 20, warmup: int = 3,
              threads: int | None = None) -> BenchReport:
    if runs < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise UserError(f"bench: runs must be >= 1, warmup >= 0 and threads >= 1 (got {runs}, {warmup}, {threads})")
    name, arg = parse_device(device)
    programs = collect_programs(Path(target))
    settings = BenchSettings(runs=runs, warmup=warmup, threads=threads)
    result = DEVICES[name](arg, programs, settings)
    return BenchReport(created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       device=result.device, settings=settings, models=result.models)
