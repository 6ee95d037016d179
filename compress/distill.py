"""Stage 1, feature distillation: each student tower learns its teacher tower's features.

Image: intermediate feature maps through 1x1 conv adapters and the pooled embedding through a linear adapter.
Text: the embedding and the pooled hidden state, on English AND Chinese captions, each encoded by the teacher with
its own tokenizer. The embedding adapter is shared by both towers, so matching the teacher's joint space through one
map also aligns the student's image and text embeddings with each other before stage 2 starts.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from compress.data.pairs import PairSet, epoch_batches, steps_per_epoch
from compress.losses import FeatureDistillLoss
from compress.model import DualEncoder
from compress.progress import log_epoch, progress_bar
from compress.recipe import DistillConfig
from compress.teachers.base import Teacher
from compress.tokenizer import BilingualTokenizer
from compress.training import History, cosine_schedule, make_accelerator, make_batch, make_optimizer, seeded, trim_padding


class Adapters(nn.Module):
    """Student -> teacher feature adapters; trained with the student and thrown away after stage 1."""

    def __init__(self, student: DualEncoder, teacher: Teacher, teacher_hidden: int | None) -> None:
        super().__init__()
        pairs = list(zip(student.image.map_channels[::-1], teacher.map_channels[::-1]))[::-1]
        self.maps = nn.ModuleList([nn.Conv2d(s, t, kernel_size=1) for s, t in pairs])
        self.embed = nn.Linear(student.spec.embed_dim, teacher.embed_dim)
        self.hidden = nn.Linear(student.text.width, teacher_hidden) if teacher_hidden else None


def _teacher_hidden_size(teacher: Teacher) -> int | None:
    out = teacher.encode_text(["a", "一"])
    return None if out.hidden is None else int(out.hidden.shape[-1])


def distill_loss(
    student: DualEncoder, adapters: Adapters, teacher: Teacher, pixels: torch.Tensor, ids: torch.Tensor,
    texts: list[str], cfg: DistillConfig, crit: FeatureDistillLoss,
) -> tuple[torch.Tensor, dict[str, float]]:
    with torch.no_grad():
        t_img = teacher.encode_image(pixels)
        t_txt = teacher.encode_text(texts)
    dev = pixels.device  # teachers keep their own device; a GPU student must not mix devices in the loss
    t_img.embedding, t_img.maps = t_img.embedding.to(dev), [m.to(dev) for m in t_img.maps]
    t_txt.embedding = t_txt.embedding.to(dev)
    t_txt.hidden = None if t_txt.hidden is None else t_txt.hidden.to(dev)
    s_emb, s_maps = student.image.forward_features(pixels)
    n = len(adapters.maps)
    map_loss = sum(crit(a(s), t) for a, s, t in zip(adapters.maps, s_maps[-n:], t_img.maps[-n:])) / max(1, n)
    img_emb = crit(adapters.embed(s_emb), t_img.embedding)
    s_txt, s_hidden = student.text.forward_features(ids)
    txt_emb = crit(adapters.embed(s_txt), t_txt.embedding)
    loss = cfg.map_weight * map_loss + cfg.embed_weight * (img_emb + txt_emb)
    parts = {"maps": float(map_loss.detach()) if torch.is_tensor(map_loss) else 0.0, "image_embed": img_emb.item(), "text_embed": txt_emb.item()}
    if adapters.hidden is not None and t_txt.hidden is not None:
        hid = crit(adapters.hidden(s_hidden), t_txt.hidden)
        loss = loss + cfg.hidden_weight * hid
        parts["text_hidden"] = hid.item()
    return loss, parts


def train_distill(
    student: DualEncoder, tokenizer: BilingualTokenizer, teacher: Teacher, pairs: PairSet, cfg: DistillConfig,
    seed: int = 0,
) -> History:
    accelerator = make_accelerator()
    device = accelerator.device
    adapters = Adapters(student, teacher, _teacher_hidden_size(teacher))
    student.to(device).train()
    adapters.to(device).train()
    optimizer = make_optimizer(list(student.image.parameters()) + list(student.text.parameters()) + list(adapters.parameters()), cfg.lr, cfg.weight_decay)
    total = max(1, cfg.epochs * steps_per_epoch(pairs, cfg.batch_size))
    scheduler = cosine_schedule(optimizer, total)
    crit = FeatureDistillLoss()
    rng, gen = seeded(seed)
    history = History()
    start = time.perf_counter()
    with progress_bar("stage 1: distill", total) as advance:
        for _ in range(cfg.epochs):
            losses, parts_sum = [], {}
            for idx, groups in epoch_batches(pairs, cfg.batch_size, rng):
                b = make_batch(pairs, idx, groups, rng, gen, tokenizer, device)
                ids = trim_padding(torch.cat([b.en_ids, b.zh_ids]))
                loss, parts = distill_loss(student, adapters, teacher, b.pixels, ids, b.en + b.zh, cfg, crit)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v
                advance(f"loss {loss.item():.3f}")
            history.losses.append(sum(losses) / max(1, len(losses)))
            history.parts.append({k: v / max(1, len(losses)) for k, v in parts_sum.items()})
            log_epoch("stage 1: distill", len(history.losses), cfg.epochs, history.losses[-1], time.perf_counter() - start)
    history.seconds = time.perf_counter() - start
    student.eval()
    return history
