"""Stage 2, alignment: symmetric InfoNCE between each image and BOTH its English and Chinese caption.

The same loop trains the reference teacher from scratch and fine-tunes int8 fake-quantised students in QAT: it
only needs two callables (pixels -> embedding, token ids -> embedding) and the parameters to optimise.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import torch
from torch import nn

from compress.data.pairs import PairSet, epoch_batches, steps_per_epoch
from compress.losses import ClipLoss, LogitDistillLoss, MarginRegularizer
from compress.progress import log_epoch, progress_bar
from compress.recipe import AlignConfig
from compress.tokenizer import BilingualTokenizer
from compress.training import History, cosine_schedule, make_accelerator, make_batch, make_optimizer, seeded, trim_padding


def align_loss(
    image: torch.Tensor, en: torch.Tensor, zh: torch.Tensor, logit_scale: torch.Tensor,
    margin_reg: float = 0.0, margin: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    clip, reg = ClipLoss(), MarginRegularizer(margin)
    l_en, l_zh = clip(image, en, logit_scale), clip(image, zh, logit_scale)
    loss = 0.5 * (l_en + l_zh)
    parts = {"clip_en": l_en.item(), "clip_zh": l_zh.item()}
    if margin_reg > 0:
        r = 0.5 * (reg(image, en) + reg(image, zh))
        loss = loss + margin_reg * r
        parts["margin_reg"] = r.item()
    return loss, parts


def teacher_kd(teacher, b, img, en, zh, logit_scale) -> torch.Tensor:
    """Teacher-guided soft targets for stage 2 (teacher embeddings of the same images and captions)."""
    with torch.no_grad():
        t_img = teacher.encode_image(b.pixels).embedding.to(img.device)
        t_txt = teacher.encode_text(b.en + b.zh).embedding.to(img.device)
    t_en, t_zh = t_txt.chunk(2)
    scale = float(getattr(teacher, "logit_scale", 100.0))
    crit = LogitDistillLoss()
    return 0.5 * (crit(img, en, logit_scale, t_img, t_en, scale) + crit(img, zh, logit_scale, t_img, t_zh, scale))


def train_align(
    encode_image: Callable[[torch.Tensor], torch.Tensor],
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    image_params: Iterable[nn.Parameter],
    text_params: Iterable[nn.Parameter],
    logit_scale: nn.Parameter,
    tokenizer: BilingualTokenizer,
    pairs: PairSet,
    cfg: AlignConfig,
    seed: int = 0,
    description: str = "align",
    modules: Iterable[nn.Module] = (),
    trim_text: bool = True,
    teacher=None,
) -> History:
    """`trim_text=False` for captured graphs (QAT), which are specialised to the full context length."""
    accelerator = make_accelerator()
    device = accelerator.device
    for m in modules:
        m.to(device)
    logit_scale.data = logit_scale.data.to(device)
    optimizer = make_optimizer(list(text_params) + [logit_scale], cfg.lr, cfg.weight_decay, image_params, cfg.image_lr_scale)
    total = max(1, cfg.epochs * steps_per_epoch(pairs, cfg.batch_size))
    scheduler = cosine_schedule(optimizer, total)
    rng, gen = seeded(seed)
    history = History()
    start = time.perf_counter()
    with progress_bar(description, total) as advance:
        for _ in range(cfg.epochs):
            losses, parts_sum = [], {}
            for idx, groups in epoch_batches(pairs, cfg.batch_size, rng):
                b = make_batch(pairs, idx, groups, rng, gen, tokenizer, device)
                ids = torch.cat([b.en_ids, b.zh_ids])
                en, zh = encode_text(trim_padding(ids) if trim_text else ids).chunk(2)
                img = encode_image(b.pixels)
                loss, parts = align_loss(img, en, zh, logit_scale, cfg.margin_reg, cfg.margin)
                if teacher is not None and cfg.distill_weight > 0:
                    kd = teacher_kd(teacher, b, img, en, zh, logit_scale)
                    loss = loss + cfg.distill_weight * kd
                    parts["logit_kd"] = kd.item()
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                with torch.no_grad():
                    logit_scale.clamp_(0, 4.6052)  # temperature >= 0.01, as in CLIP
                losses.append(loss.item())
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v
                advance(f"loss {loss.item():.3f}")
            history.losses.append(sum(losses) / max(1, len(losses)))
            history.parts.append({k: v / max(1, len(losses)) for k, v in parts_sum.items()})
            log_epoch(description, len(history.losses), cfg.epochs, history.losses[-1], time.perf_counter() - start)
    history.seconds = time.perf_counter() - start
    return history
