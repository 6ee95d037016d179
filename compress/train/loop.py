"""THE training loop. Every stage (stage 1 distill, stage 2 align, the reference teacher, int8 QAT) runs through it.

A stage is an `nn.Module` whose `forward(batch)` returns `(loss, parts)`, plus its optimizer parameter groups; the
loop does the rest the way accelerate's examples do: model, optimizer, data and schedule go through
`accelerator.prepare`, gradient accumulation through `accelerator.accumulate`, clipping, cosine schedule with
warm-up, bf16 autocast where the device has it, progress with images/s and ETA, CSV + TensorBoard scalars, and
atomic mid-stage checkpoints that a killed run resumes from bit-identically (CPU, one process).

Several processes (`accelerate launch`): each global micro-batch is split into equal contiguous slices, one per
process, and contrastive losses gather the embeddings (`gather`), so the global batch provides the negatives and
the first step's loss equals a single process's on the same batch.
"""
from __future__ import annotations

import contextlib
import csv
import gc
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

import torch
from torch import nn

from compress.progress import log, log_epoch, progress_bar
from compress.recipe.schema import StageConfig, TrainingConfig
from compress.train import checkpoint
from compress.train.data import EpochPlan, KeyCollate, KeyDataset, micro_batch_size


# ------------------------------------------------------------------------------------------------ accelerate
_ACCELERATOR = None


def accelerator(mixed_precision: str = "auto"):
    """One Accelerator per process (its state is a process-wide singleton anyway).

    `auto` picks bf16 autocast on a CUDA device that has it, else fp32: CPU runs stay fp32 so they are bit-exact.
    """
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
        from accelerate.utils import GradientAccumulationPlugin

        if mixed_precision == "auto":
            mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        _ACCELERATOR = Accelerator(
            cpu=not torch.cuda.is_available(),  # under torchrun on a CPU-only host: MULTI_CPU over gloo
            mixed_precision=mixed_precision,
            dataloader_config=DataLoaderConfiguration(split_batches=True, even_batches=False),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            # Steps are counted, never taken from the dataloader: an epoch holds whole steps, and a loop that ended
            # early (an exception) must not leave "end of dataloader" behind for the next stage.
            gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=1, sync_with_dataloader=False,
                                                                    adjust_scheduler=False),
        )
    return _ACCELERATOR


def world_size() -> int:
    return accelerator().num_processes


def is_main_process() -> bool:
    return accelerator().is_main_process


_DATA_PARALLEL = [False]  # True while a stage trains over several processes (the loop sets it)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-process tensor over all processes in rank order, keeping the local part's gradient.

    A no-op unless the running stage is data-parallel (QAT trains on the main process alone even when launched
    with several)."""
    if not _DATA_PARALLEL[0]:
        return x
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # its deprecation names a replacement without autograd
        return torch.cat(all_gather(x.contiguous()), dim=0)


# ------------------------------------------------------------------------------------------------ the stage
class Stage(Protocol):
    """What a stage hands the loop: an nn.Module with `name`, `forward(batch) -> (loss, parts)` and its groups."""

    name: str
    description: str

    def param_groups(self) -> list[dict]: ...

    def after_step(self) -> None: ...


def param_groups(params: Iterable[nn.Parameter], lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices and conv kernels, none on norms, biases and scalars."""
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay, "lr": lr},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr": lr},
    ]
    return [g for g in groups if g["params"]]


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class History:
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    parts: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0  # optimizer steps
    batch: dict = field(default_factory=dict)  # world_size, global / per-process micro-batch, grad_accum

    def as_dict(self) -> dict:
        return {"epoch_loss": self.losses, "epoch_parts": self.parts, "seconds": round(self.seconds, 2),
                "steps": self.steps, "batch": self.batch}


def _one_thread(_worker: int) -> None:
    """A loader worker decodes and augments with one torch thread: the training process owns the cores' threads
    (and the tokenizer stays single-threaded in a forked worker, as HF tokenizers asks)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(1)


@dataclass
class LoopContext:
    """Where a stage's checkpoints and logs go, and how it runs. `folder=None`: no checkpoints, no logs."""

    folder: Path | None = None  # the run folder
    seed: int = 0
    training: TrainingConfig = field(default_factory=TrainingConfig)
    resume: bool = False
    distributed: bool = True  # False: this process trains alone (QAT, or the teacher while others wait)
    views: int | None = None  # K views per sample when the data comes with a K-view teacher cache
    workers: int = 0  # DataLoader worker processes that build batches (read, decode, augment, tokenize)
    # (size, PIL resample) of the teacher's first resize: a corpus on disk then gives the teacher its own view of
    # each crop (KeyCollate); None: the teacher sees the student's pixels
    teacher_input: tuple[int, int] | None = None


# ------------------------------------------------------------------------------------------------ scalars
class Scalars:
    """Per-step scalars to `logs/scalars.csv` (always) and TensorBoard (`logs/tensorboard/`, when installed)."""

    FIELDS = ["stage", "step", "epoch", "loss", "lr", "images_per_s", "parts"]

    def __init__(self, folder: Path | None, stage: str, tensorboard: bool, resume_step: int) -> None:
        self.stage, self.writer, self.path = stage, None, None
        if folder is None or not is_main_process():
            return
        logs = folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.path = logs / "scalars.csv"
        rows = []
        if self.path.is_file():  # a resumed stage drops the rows past its checkpoint, so the log matches a clean run
            with self.path.open(newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if r["stage"] != stage or int(r["step"]) <= resume_step]
        with self.path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, self.FIELDS)
            w.writeheader()
            w.writerows(rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV only
                return
            self.writer = SummaryWriter(str(logs / "tensorboard" / stage), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, epoch: int, loss: float, lr: float, ips: float, parts: dict[str, float]) -> None:
        if self.path is None:
            return
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.FIELDS).writerow({
                "stage": self.stage, "step": step, "epoch": epoch, "loss": f"{loss:.6g}", "lr": f"{lr:.6g}",
                "images_per_s": f"{ips:.1f}", "parts": ";".join(f"{k}={v:.6g}" for k, v in parts.items()),
            })
        if self.writer is not None:
            self.writer.add_scalar(f"{self.stage}/loss", loss, step)
            self.writer.add_scalar(f"{self.stage}/lr", lr, step)
            self.writer.add_scalar(f"{self.stage}/images_per_s", ips, step)
            for k, v in parts.items():
                self.writer.add_scalar(f"{self.stage}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------------------------------------ the loop
@contextlib.contextmanager
def _frozen_heap(forking: bool):
    """Everything alive before the DataLoader forks its workers moved out of the garbage collector's sight
    (`gc.freeze`), so the workers' collections do not write to those objects' headers and copy every page that holds
    one: a copy per worker of what the process held. Unfrozen when training ends."""
    if not forking:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def train(stage: nn.Module, pairs, tokenizer, cfg: StageConfig, ctx: LoopContext) -> History:
    """Run `stage` for `cfg.epochs` over `pairs`; resume from its newest checkpoint when `ctx.resume`."""
    acc = accelerator(ctx.training.mixed_precision)
    world = world_size() if ctx.distributed else 1
    acc.gradient_accumulation_steps = cfg.grad_accum
    acc.step = 0  # micro-batch counter of `accumulate`; stages (and resumed positions) start on a step boundary
    micro = micro_batch_size(cfg.batch_size, cfg.grad_accum, world, pairs.num_groups)
    plan = EpochPlan(pairs, micro, ctx.seed, cfg.grad_accum, ctx.views)
    loader = torch.utils.data.DataLoader(KeyDataset(), batch_sampler=plan, collate_fn=KeyCollate(pairs, ctx.seed, tokenizer, ctx.teacher_input),
                                         num_workers=ctx.workers, worker_init_fn=_one_thread if ctx.workers else None,
                                         prefetch_factor=4 if ctx.workers else None, persistent_workers=ctx.workers > 0)
    optimizer = torch.optim.AdamW(stage.param_groups(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    steps_per_epoch = plan.batches_per_epoch // cfg.grad_accum
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    scheduler = cosine_schedule(optimizer, total_steps, cfg.warmup)
    if ctx.distributed:
        model, optimizer, loader, scheduler = acc.prepare(stage, optimizer, loader, scheduler)
    else:
        model = stage.to(acc.device)
    ckpt_dir = ctx.folder / "checkpoints" / stage.name if ctx.folder is not None else None
    pos = {"epoch": 0, "micro": 0, "step": 0, "sums": {}, "count": 0, "history": History().as_dict()}
    restored = checkpoint.load_newest(ckpt_dir, stage, optimizer, scheduler) if ckpt_dir is not None and ctx.resume else None
    if restored is not None:
        found, pos, skipped = restored
        for why in skipped:  # a damaged newest checkpoint costs its steps, not the run
            log(f"[yellow]warning:[/] resume: {stage.name}: skipped the damaged checkpoint {why}")
        log(f"resume: {stage.name} from {found.name} (epoch {pos['epoch'] + 1}, step {pos['step']})")
    hist = History(pos["history"]["epoch_loss"], pos["history"]["epoch_parts"], pos["history"]["seconds"], pos["step"])
    hist.batch = {"world_size": world, "global_batch": micro * cfg.grad_accum, "global_micro_batch": micro,
                  "per_process_micro_batch": micro // world, "grad_accum": cfg.grad_accum}
    scalars = Scalars(ctx.folder, stage.name, ctx.training.tensorboard, pos["step"])
    write = ctx.folder is not None and is_main_process()

    def save_checkpoint() -> None:
        if write and ckpt_dir is not None:
            pos["history"] = hist.as_dict()
            checkpoint.save(ckpt_dir, pos["epoch"] * plan.batches_per_epoch + pos["micro"], acc.unwrap_model(model),
                            optimizer, scheduler, pos, ctx.training.keep_last)

    _DATA_PARALLEL[0] = world > 1
    start, images, t_last = time.perf_counter(), 0, time.perf_counter()
    seen, epoch_step = 0, pos["step"]  # this epoch's samples and first step, for the log's throughput only
    done = pos["epoch"] * steps_per_epoch + pos["micro"] // cfg.grad_accum
    with progress_bar(stage.description, total_steps, completed=done) as advance, _frozen_heap(ctx.workers > 0):
        while pos["epoch"] < cfg.epochs:
            plan.epoch, plan.start = pos["epoch"], pos["micro"]
            for batch in loader:
                with acc.accumulate(model):
                    loss, parts = model(batch)
                    acc.backward(loss)
                    if acc.sync_gradients:
                        lr = scheduler.get_last_lr()[0]  # the rate this step uses (logged below)
                        if cfg.clip_grad_norm > 0:
                            acc.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                stage.after_step()
                value = float(acc.reduce(loss.detach(), "mean") if world > 1 else loss.detach())  # the global batch's
                pos["micro"] += 1
                pos["count"] += 1
                pos["sums"]["loss"] = pos["sums"].get("loss", 0.0) + value
                for k, v in parts.items():
                    pos["sums"][k] = pos["sums"].get(k, 0.0) + float(v)
                images += len(batch) * world
                seen += len(batch) * world
                if pos["micro"] % cfg.grad_accum == 0:
                    pos["step"] += 1
                    now = time.perf_counter()
                    ips = images / max(now - t_last, 1e-9)
                    images, t_last = 0, now
                    scalars.write(pos["step"], pos["epoch"] + 1, value, lr, ips,
                                  {k: float(v) for k, v in parts.items()})
                    advance(f"loss {value:.3f} · {ips:.0f} img/s")
                    if pos["step"] % ctx.training.checkpoint_every == 0 and pos["micro"] < plan.batches_per_epoch:
                        save_checkpoint()
            n = max(1, pos["count"])
            hist.losses.append(pos["sums"].pop("loss", 0.0) / n)
            hist.parts.append({k: v / n for k, v in pos["sums"].items()})
            epoch_seconds = time.perf_counter() - start
            hist.seconds += epoch_seconds
            start = time.perf_counter()
            hist.steps = pos["step"]
            pos.update(epoch=pos["epoch"] + 1, micro=0, sums={}, count=0)
            log_epoch(stage.description, pos["epoch"], cfg.epochs, hist.losses[-1], hist.seconds,
                      steps=pos["step"] - epoch_step, samples=seen, epoch_seconds=epoch_seconds)
            seen, epoch_step = 0, pos["step"]
            save_checkpoint()
    scalars.close()
    _DATA_PARALLEL[0] = False
    if ctx.distributed:
        acc.free_memory()  # drop the prepared references; the modules themselves live on in the caller
    return hist


def clear_checkpoints(folder: Path | None, name: str) -> None:
    """A finished stage's artifact supersedes its mid-stage checkpoints."""
    if folder is not None and is_main_process():
        import shutil

        shutil.rmtree(folder / "checkpoints" / name, ignore_errors=True)
        if (folder / "checkpoints").is_dir() and not any((folder / "checkpoints").iterdir()):
            (folder / "checkpoints").rmdir()
