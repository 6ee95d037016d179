"""Mid-stage checkpoints: everything a stage needs to continue bit-identically, in safetensors + JSON (no pickle).

A checkpoint is a folder `pos-<micro-batches done>` holding:
- `model.safetensors`   the stage's trainable modules (student, adapters, temperature; QAT observers too);
- `optimizer.safetensors` + the tensor-free rest of the optimizer state in `state.json`;
- `rng.safetensors`     torch CPU (and CUDA) generator states;
- `state.json`          loop position, partial epoch sums, history so far, scheduler state, Python/NumPy RNG.
It is written under a temporary name and renamed when complete, so a kill leaves either the whole folder or
nothing; older ones beyond `keep_last` are removed after a new one is in place.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from compress.atomic import write_json
from compress.errors import UserError, one_line
from compress.readers import read_json, read_safetensors

PREFIX = "pos-"


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        rest["state"][str(pid)] = {}
        for k, v in entries.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().contiguous().cpu()
            else:
                rest["state"][str(pid)][k] = v
    return tensors, rest


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in rest["state"].items()}
    for name, t in tensors.items():
        pid, k = name.split(".", 1)
        state.setdefault(int(pid), {})[k] = t
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    return tensors, {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def _set_rng_state(tensors: dict[str, torch.Tensor], other: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = other["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = other["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save(folder: Path, position: int, model: torch.nn.Module, optimizer, scheduler, loop: dict, keep_last: int) -> Path:
    """Write checkpoint `pos-<position>` atomically (temp folder + rename), then prune to the newest `keep_last`."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{position:09d}"
    tmp = folder / f".{final.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # clone: QAT graphs reference one observer under several names, and safetensors refuses shared storage
    save_file({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    opt_tensors, opt_rest = _split_optimizer(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_rest = _rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    write_json(tmp / "state.json", {"loop": loop, "optimizer": opt_rest, "scheduler": sched, "rng": rng_rest})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (partial ones start with '.' and never match)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def latest(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1] if found else None


class Damaged(Exception):
    """A checkpoint folder that cannot be restored (truncated, replaced, edited or from another model)."""


def load(path: Path, model: torch.nn.Module, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and every RNG from `path`; returns the loop state. A damaged checkpoint
    raises `Damaged` (what it restored so far is overwritten by whichever checkpoint loads next)."""
    try:
        return _load(path, model, optimizer, scheduler)
    except (UserError, OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError, SafetensorError) as exn:
        why = (one_line(exn) or type(exn).__name__)[:160]
        raise Damaged(f"{path.name}: {type(exn).__name__}: {why}") from None


def load_newest(folder: Path, model: torch.nn.Module, optimizer, scheduler) -> tuple[Path, dict, list[str]] | None:
    """The newest checkpoint of `folder` that restores, newest first; (path, loop state, what was skipped and why),
    or None when the folder has none. Every checkpoint damaged: a one-line UserError."""
    found = checkpoints(folder)
    skipped: list[str] = []
    for path in reversed(found):
        try:
            return path, load(path, model, optimizer, scheduler), skipped
        except Damaged as exn:
            skipped.append(str(exn))
    if found:
        raise UserError(f"every checkpoint in {str(folder)!r} is damaged ({'; '.join(skipped)[:300]}); delete that "
                        "folder to restart this stage, or run without --resume")
    return None


def _load(path: Path, model: torch.nn.Module, optimizer, scheduler) -> dict:
    fix = "the checkpoint before it is used instead"
    meta = read_json(path / "state.json", "checkpoint file", fix)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    weights = read_safetensors(path / "model.safetensors", "checkpoint file", fix)
    model.load_state_dict({k: v.to(device) for k, v in weights.items()})
    opt = _join_optimizer(read_safetensors(path / "optimizer.safetensors", "checkpoint file", fix), meta["optimizer"])
    optimizer.load_state_dict(opt)
    scheduler.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    _set_rng_state(read_safetensors(path / "rng.safetensors", "checkpoint file", fix), meta["rng"])
    return meta["loop"]
