""""What is this path?": the one answer for every command that takes a model reference.

A reference is a run folder, a checkpoint folder, an export bundle, a `.pte`, `RUN/teacher` (the teacher a run
distilled from), `reference` (the cached reference teacher), or a Hugging Face folder / hub id. `export`, `eval`
and the Python side all resolve through `resolve_ref`, so they never disagree about what a folder is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from compress.errors import UserError
from compress.readers import read_json

Kind = Literal["run", "checkpoint", "bundle", "pte", "run_teacher", "reference", "hub"]


@dataclass(frozen=True)
class Ref:
    kind: Kind
    spec: str
    path: Path | None = None  # the folder or file the reference names
    checkpoint: Path | None = None  # run / checkpoint: the folder holding model.json + model.safetensors
    run: Path | None = None  # the run folder, when the reference lives in one

    def recipe(self) -> dict | None:
        """The run's recipe.json as a dict (None outside a run)."""
        if self.run is None or not (self.run / "recipe.json").is_file():
            return None
        return read_json(self.run / "recipe.json", "run recipe", "restore it, or export the checkpoint folder itself")


def _is_run(folder: Path) -> bool:
    return (folder / "recipe.json").is_file() or (folder / "report.json").is_file() or (folder / "export").is_dir()


def resolve_ref(spec: str | Path) -> Ref:
    spec = str(spec)
    path = Path(spec)
    if spec == "reference" and not path.exists():
        return Ref("reference", spec)
    if path.name == "teacher" and not path.exists() and (path.parent / "recipe.json").is_file():
        return Ref("run_teacher", spec, path.parent, run=path.parent)
    if path.suffix == ".pte":
        if not path.is_file():
            raise UserError(f"{spec!r} not found; pass an exported .pte or its export folder")
        return Ref("pte", spec, path, run=path.parent.parent if _is_run(path.parent.parent) else None)
    if (path / "bundle.json").is_file():
        return Ref("bundle", spec, path, run=path.parent if _is_run(path.parent) else None)
    if (path / "student_fp32" / "model.json").is_file():
        return Ref("run", spec, path, checkpoint=path / "student_fp32", run=path)
    if (path / "model.json").is_file():
        return Ref("checkpoint", spec, path, checkpoint=path, run=path.parent if _is_run(path.parent) else None)
    if path.is_dir() and (path / "recipe.json").is_file():
        raise UserError(f"run {spec!r} has no finished student (student_fp32/model.json); finish it with "
                        f"`dcclip-compress run RECIPE --out {spec} --resume`")
    if path.is_file():
        raise UserError(f"{spec!r} is a file, not a model; pass a checkpoint or run folder, a .pte, or a hub id")
    return Ref("hub", spec, path if path.is_dir() else None)


def student_checkpoint(spec: str | Path, command: str) -> Ref:
    """A reference that must hold trained student weights (a run or a checkpoint folder)."""
    ref = resolve_ref(spec)
    if ref.kind not in ("run", "checkpoint"):
        raise UserError(f"{command}: {str(spec)!r} is neither a run folder nor a checkpoint folder (model.json + "
                        "model.safetensors); pass runs/<name> or runs/<name>/student_fp32")
    return ref


def _finished_runs() -> list[tuple[bool, float, Path]]:
    """(has an export bundle, when its report was written, folder) of every finished run under the home's runs/."""
    from compress.home import runs_dir

    found = []
    root = runs_dir()
    for folder in (p for p in (root.iterdir() if root.is_dir() else ()) if p.is_dir()):
        report, model = folder / "report.json", folder / "student_fp32" / "model.json"
        if report.is_file() and model.is_file():
            found.append(((folder / "export" / "bundle.json").is_file(), report.stat().st_mtime, folder))
    return found


def latest_run(command: str) -> Path:
    """The run a command takes when given none: the newest finished run that shipped an export bundle (a comparison
    run without one, such as `make run`'s stage-2-only twin, only when no other run is there)."""
    from compress.home import runs_dir

    found = _finished_runs()
    if not found:
        raise UserError(f"{command}: no finished run under {str(runs_dir())!r} (set by DCCLIP_HOME); train one with "
                        "`dcclip-compress run mobilevit_int8`, or name a run folder")
    return max(found, key=lambda f: (f[0], f[1]))[2]


def latest_bundle(command: str) -> Path:
    """The export bundle of the newest finished run that has one (`bench`, `verify` with no argument)."""
    from compress.home import runs_dir

    found = [f for f in _finished_runs() if f[0]]
    if not found:
        raise UserError(f"{command}: no finished run with an export bundle under {str(runs_dir())!r} (set by "
                        "DCCLIP_HOME); train one with `dcclip-compress run mobilevit_int8`, or name a bundle folder")
    return max(found, key=lambda f: f[1])[2] / "export"
