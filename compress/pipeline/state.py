"""What one run carries from stage to stage: its recipe, folder, timings and training history."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from compress.progress import log
from compress.recipe.schema import Recipe
from compress.train import loop


@dataclass
class RunState:
    recipe: Recipe
    out: Path
    resume: bool
    distributed: bool = True  # False: train alone even under `accelerate launch` (the teacher, while others wait)
    world_size: int = 1
    teacher_data: list[str] = field(default_factory=list)  # why the student's data is not a subset of the teacher's
    timings: dict[str, float] = field(default_factory=dict)
    history: dict[str, dict] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log(f"[bold cyan]▶ {name}[/]")
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)


def loop_context(state: RunState, stage_offset: int, distributed: bool = True) -> loop.LoopContext:
    """Each stage seeds the global RNG itself, so a run resumed between stages draws exactly what a clean one does."""
    recipe = state.recipe
    torch.manual_seed(recipe.seed + stage_offset)
    return loop.LoopContext(state.out, recipe.seed + stage_offset, recipe.training, state.resume,
                            distributed=distributed and state.distributed, workers=recipe.data.workers)
