"""Stage 2, alignment: symmetric InfoNCE between each image and BOTH its English and Chinese caption.

The same stage trains the reference teacher from scratch and fine-tunes int8 fake-quantised students in QAT: it
only needs an image module (pixels -> embedding), a text module (token ids -> embedding) and a temperature.
Rows that lack a language (one-language corpora) take part only in the other language's loss. Across processes the
embeddings are gathered first, so the global batch provides the negatives.
"""
from __future__ import annotations

import torch
from torch import nn

from compress.recipe.schema import AlignConfig
from compress.train.data import Batch, trim_padding
from compress.train.losses import ClipLoss, EmbeddingDistillLoss, LogitDistillLoss, MarginRegularizer
from compress.train.loop import gather, param_groups

MAX_LOGIT_SCALE = 4.6052  # temperature >= 0.01, as in CLIP
# The positive-pair term's activity, recorded per language whether or not `margin_reg` weighs it in (the loop
# averages each over the epoch's batches): mean positive cosine, fraction of positives the recipe's margin form
# pushes, and the batch margin min_i (s_ii - max_{j!=i} s_ij) of image i against the batch's captions.
ACTIVITY_KEYS = {"pos_cos": "pos_cos_{lang}", "active": "margin_active_{lang}", "batch_margin": "batch_margin_{lang}"}


def _full(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Embeddings of the rows where `mask` holds, scattered into a (len(mask), D) tensor (zeros elsewhere)."""
    if bool(mask.all()):
        return rows
    out = rows.new_zeros(mask.shape[0], rows.shape[1])
    out[mask] = rows
    return out


class AlignStage(nn.Module):
    def __init__(
        self, image: nn.Module, text: nn.Module, logit_scale: nn.Parameter, cfg: AlignConfig, *, teacher=None,
        trim_text: bool = True, name: str = "align", description: str = "stage 2: align",
        reference: tuple[nn.Module, nn.Module] | None = None, reference_weight: float = 0.0,
        contrastive_weight: float = 1.0,
    ) -> None:
        """`trim_text=False` for captured graphs (QAT), which are specialised to the full context length.
        `reference`: frozen (image, text) towers whose embeddings of the same inputs the trained towers are pulled
        toward with weight `reference_weight` (QAT: the fp32 student its fake-quantised copy approximates).
        `contrastive_weight` scales the contrastive terms (clip, margin, affinity); 0 leaves the reference alone."""
        super().__init__()
        self.image, self.text, self.logit_scale = image, text, logit_scale
        self.cfg, self.teacher, self.trim_text = cfg, teacher, trim_text
        self.name, self.description = name, description
        self.clip, self.reg, self.kd = ClipLoss(), MarginRegularizer(cfg.margin, cfg.margin_form), LogitDistillLoss()
        self.reference = reference if reference_weight > 0 else None  # a plain tuple: not trained, not saved
        self.reference_weight, self.self_distill = reference_weight, EmbeddingDistillLoss()
        self.contrastive_weight = contrastive_weight

    def param_groups(self) -> list[dict]:
        cfg = self.cfg
        text = list(self.text.parameters()) + [self.logit_scale]
        return param_groups(text, cfg.lr, cfg.weight_decay) + param_groups(
            self.image.parameters(), cfg.lr * cfg.image_lr_scale, cfg.weight_decay)

    def after_step(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        # Rows with an image: the contrastive terms see only those (with a caption); a text-only row (stage-1 rows in
        # stage 2, `align.retain`) reaches only the reference term. Every process gathers all of its rows (zeros
        # where a row has no image, masked out), so the collectives see equal shapes whatever each slice holds. Every
        # row has an image in plain stage 2 and QAT: then nothing here differs from a pairs-only batch.
        partial = batch.has_image is not None and not bool(batch.has_image.all())
        pix = batch.rows(batch.has_image) if partial else batch
        has = {"en": batch.has_en, "zh": batch.has_zh}
        ids = torch.cat([batch.en_ids[batch.has_en], batch.zh_ids[batch.has_zh]])
        txt = self.text(trim_padding(ids) if self.trim_text else ids) if len(ids) else None
        local_img = self.image(pix.pixels) if len(pix) else None
        if txt is None:  # a batch of images without captions (possible with stage-1 rows): no text terms
            txt = local_img.new_zeros(0, local_img.shape[1])
        n_en = int(batch.has_en.sum())
        img_rows = local_img
        if partial:
            img_rows = _full(local_img, batch.has_image) if local_img is not None else txt.new_zeros(len(batch), txt.shape[1])
        img = gather(img_rows)
        texts = {"en": gather(_full(txt[:n_en], has["en"])), "zh": gather(_full(txt[n_en:], has["zh"]))}
        masks = {lang: gather(m & batch.has_image if partial else m) for lang, m in has.items()}
        teacher = (self._teacher_embeddings(batch, pix, has, partial)
                   if self.teacher is not None and cfg.affinity_weight > 0 else None)
        langs = [lang for lang in ("en", "zh") if int(masks[lang].sum()) >= 2]  # a language needs negatives
        loss, parts = img.sum() * 0.0 + txt.sum() * 0.0, {}  # every parameter gets a (zero) gradient
        for lang in langs:
            m = masks[lang]
            i, t = (img, texts[lang]) if bool(m.all()) else (img[m], texts[lang][m])
            clip = self.clip(i, t, self.logit_scale)
            term = clip
            parts[f"clip_{lang}"] = clip.detach()
            for key, value in self.reg.activity(i, t).items():  # no gradient, no RNG: the training is unchanged
                parts[ACTIVITY_KEYS[key].format(lang=lang)] = value
            if cfg.margin_reg > 0:
                r = self.reg(i, t)
                term = term + cfg.margin_reg * r
                parts[f"margin_reg_{lang}"] = r.detach()
            if teacher is not None:
                t_img, t_txt = teacher[0][m], teacher[1][lang][m]
                kd = self.kd(i, t, self.logit_scale, t_img, t_txt, teacher[2])
                term = term + cfg.affinity_weight * kd
                parts[f"affinity_{lang}"] = kd.detach()
            loss = loss + self.contrastive_weight * term / len(langs)
        if self.reference is not None:
            with torch.no_grad():
                ref_image, ref_text = (m.to(batch.pixels.device) for m in self.reference)  # no-op once moved
                ref_txt = ref_text(ids) if len(ids) else None
                ref_img = ref_image(pix.pixels) if local_img is not None else None
            terms = ([self.self_distill(local_img, ref_img)] if local_img is not None else []) + (
                [self.self_distill(txt, ref_txt)] if ref_txt is not None else [])
            sd = terms[0] if len(terms) == 1 else 0.5 * (terms[0] + terms[1])
            loss = loss + self.reference_weight * sd
            parts["self_distill"] = sd.detach()
        for key in ("margin_reg", "affinity"):  # one number per term for the history, like the clip parts
            per_lang = [parts[f"{key}_{lang}"] for lang in langs if f"{key}_{lang}" in parts]
            if per_lang:
                parts[key] = sum(per_lang) / len(per_lang)
                for lang in langs:
                    parts.pop(f"{key}_{lang}", None)
        return loss, parts

    def _teacher_embeddings(self, batch: Batch, pix: Batch, has: dict[str, torch.Tensor], partial: bool):
        """The teacher's image and caption embeddings for this batch, laid out and gathered like the student's."""
        dev = batch.pixels.device
        with torch.no_grad():
            captions = [c for c in batch.en if c is not None] + [c for c in batch.zh if c is not None]
            t_txt = self.teacher.encode_text(captions).embedding.to(dev)
            view = pix.teacher_pixels if pix.teacher_pixels is not None else pix.pixels  # its own view of each crop
            t_img = self.teacher.encode_image(view).embedding.to(dev) if len(pix) else t_txt.new_zeros(0, t_txt.shape[1])
        if partial:
            t_img = _full(t_img, batch.has_image) if len(pix) else t_txt.new_zeros(len(batch), t_txt.shape[1])
        n_en = int(has["en"].sum())
        texts = {"en": gather(_full(t_txt[:n_en], has["en"])), "zh": gather(_full(t_txt[n_en:], has["zh"]))}
        return gather(t_img), texts, float(getattr(self.teacher, "logit_scale", 100.0))
