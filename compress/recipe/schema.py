"""The recipe schema: pydantic models, so every mistake is caught before any work starts, and the fingerprint of
what changes trained weights. Reading files and `--set` overrides is compress/recipe/load.py.

Every name a recipe holds is checked here, when it loads, against the registry below that owns it: student archs
(students/registry.py), quantization schemes (compress/quant/schemes.py), lowering targets and NPUs
(mobile_export/lower/targets.py) and search devices, each with `compress.errors.did_you_mean`. Errors name the key
path, the bad value and what is allowed, in one line (compress/recipe/load.py adds the source; the CLI exits 2).
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from compress.errors import did_you_mean
from students.registry import IMAGE_ARCHS, TEXT_ARCHS


# Bump when a code change alters trained weights for an unchanged recipe (loop, sampler, augmentation, tokenizer).
TRAINING_VERSION = 2


class Strict(BaseModel):
    # strict: "5" or true is not a number; ints are still fine for floats. No inf/nan anywhere (YAML .inf, 1e400).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class DataConfig(Strict):
    kind: Literal["emoji", "manifest", "webdataset"] = "emoji"
    image_size: int = Field(64, ge=16, le=512)
    train_renders: int = Field(8, ge=1, le=64)
    # Glyph styles of the emoji train split, train_renders each ("noto": + monochrome Noto Emoji renders, other draws
    # than the transfer split's). A teacher with more renders/styles trains on a superset of a student's data.
    train_styles: list[Literal["openmoji", "noto"]] = ["openmoji"]
    eval_renders: int = Field(1, ge=1, le=16)
    unseen_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    limit: int | None = Field(None, ge=8, le=1_000_000)
    manifest: str | None = None
    # DataLoader worker processes that read and decode training images (0: in the training process). Batches are a
    # pure function of their keys, so any count gives the same batches; a corpus on disk wants 2 or more.
    workers: int = Field(0, ge=0, le=64)
    # kind=webdataset: tar shards, a brace pattern ("data/shards/train-{000000..000009}.tar") or a glob, relative
    # to the working directory; each sample is <key>.jpg|png|webp + <key>.json {"en": ..., "zh": ...}
    shards: str | None = None
    eval_manifest: str | None = None
    cache_dir: str = ".cache/emoji"
    # The S/K/U world (compress/data/world.py), emoji data only: set split_seed to split the classes into S (the
    # students' pairs, student_fraction of all classes), K (the teacher's pairs only: the rest of the seen classes) and
    # U (nobody's: unseen_fraction). Unset: today's world, where students and teacher share every seen class.
    split_seed: int | None = Field(None, ge=0, le=2**31 - 1)
    student_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    # Whose pairs this run trains on in that world: the students' (S) or the teacher's (S and K); the reference
    # teacher's run is forced to "teacher".
    pairs: Literal["students", "teacher"] = "students"

    @field_validator("train_styles")
    @classmethod
    def _styles(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("data.train_styles: name each style once, at least one")
        return sorted(v, key=["openmoji", "noto"].index)  # canonical order: the order named does not matter

    def render_seed(self, seed: int) -> int:
        """The seed of the emoji renders and of the reference teacher for a run at `seed`. The S/K/U world: split_seed,
        so student seeds share one teacher and the same renders (the first of the teacher's) and are scored on the
        same items; the run's seed then sets only initialisation and batch order. The closed-set world: `seed`."""
        return seed if self.split_seed is None else self.split_seed

    @model_validator(mode="after")
    def _world_fits(self) -> "DataConfig":
        if self.split_seed is not None:
            if self.kind != "emoji":
                raise ValueError("data.split_seed: the S/K/U class split is for the built-in emoji world; unset it "
                                 "for manifest or webdataset corpora")
            if self.student_fraction + self.unseen_fraction >= 1.0:
                raise ValueError(f"data.student_fraction: {self.student_fraction} + unseen_fraction "
                                 f"{self.unseen_fraction} leaves no class for the teacher alone; keep their sum below 1")
        return self

    @model_validator(mode="after")
    def _manifest_needs_path(self) -> "DataConfig":
        if self.kind == "manifest" and not self.manifest:
            raise ValueError("data.manifest: kind 'manifest' needs a path to a JSONL file")
        if self.kind == "webdataset" and not self.shards:
            raise ValueError("data.shards: kind 'webdataset' needs a shard pattern such as "
                             "data/shards/train-{000000..000009}.tar")
        return self


def parse_cache_maps(value: str) -> tuple[str, int] | None:
    """`teacher.cache_maps` as (mode, grid): ("full", 0), ("none", 0), ("pooled", G); None when malformed."""
    if value in ("full", "none"):
        return value, 0
    m = re.fullmatch(r"pooled:([0-9]{1,2})", value)
    return ("pooled", int(m.group(1))) if m and 1 <= int(m.group(1)) <= 64 else None


class TeacherConfig(Strict):
    kind: Literal["reference", "hf", "none"] = "reference"
    recipe: str = "recipes/emoji_teacher.yaml"  # kind=reference: the recipe that trains (and caches) it
    spec: str | None = None  # kind=hf: hub id or local folder
    # kind=hf: vision blocks (0-based, negative from the end) whose patch tokens are the distilled maps; unset: three
    # evenly spaced blocks ending with the last; []: no maps. Range-checked against the checkpoint when it loads.
    map_layers: list[Annotated[int, Field(strict=True, ge=-1000, le=1000)]] | None = Field(None, max_length=64)
    # kind=hf: text block whose pooled token (CLS, or EOS for CLIP) is the text-hidden target; unset: the pooled
    # state the text projection consumes.
    text_layer: Annotated[int, Field(strict=True, ge=-1000, le=1000)] | None = None
    # kind=hf or reference: text blocks (0-based, negative from the end) whose pooled states the student's text tower
    # distils at as many evenly spaced student blocks (one text-hidden term each); unset: the single `text_layer`
    # target above; []: no text-hidden term. Range-checked when the teacher loads.
    text_layers: list[Annotated[int, Field(strict=True, ge=-1000, le=1000)]] | None = Field(None, max_length=64)
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"  # kind=hf: weights and compute of the frozen teacher
    device: Literal["auto", "cpu", "cuda"] = "auto"  # kind=hf: auto = this process's GPU if there is one, else CPU
    # Teacher-feature cache folder (`dcclip-compress cache-teacher RECIPE` builds it): when set, stage 1 reads its
    # targets from it (K = cache_views augmented views per sample) and needs no teacher in memory.
    cache: str | None = None
    cache_views: int = Field(4, ge=1, le=1024)
    # What the cache keeps of the teacher's feature maps (issue 17: ViT-L's three 16x16x1024 maps are ~1.5 MB per
    # view in fp16): `full`; `pooled:G`, each map average-pooled to G x G (the student's maps are pooled the same way
    # before the loss); `none`, embeddings and text hidden states only (no map term when training from the cache).
    cache_maps: str = "full"

    @model_validator(mode="after")
    def _hf_needs_spec(self) -> "TeacherConfig":
        if self.kind == "hf" and not self.spec:
            raise ValueError("teacher.spec: kind 'hf' needs a hub id or a local folder")
        if self.cache is not None and not self.cache.strip():
            raise ValueError("teacher.cache: name a folder, or leave it unset to run the teacher online")
        if self.cache is not None and self.kind == "none":
            raise ValueError("teacher.cache: kind 'none' has no teacher whose features could be cached")
        if parse_cache_maps(self.cache_maps) is None:
            raise ValueError(f"teacher.cache_maps: {self.cache_maps!r} is not full, none or pooled:G with G in 1..64 "
                             "(e.g. pooled:4)")
        if self.text_layer is not None and self.text_layers is not None:
            raise ValueError("teacher.text_layers: set either text_layer (one text-hidden target) or text_layers "
                             "(several), not both")
        return self


# `arch: search` picks the architecture by `search:` first; `arch: custom` builds `spec` (a searched architecture,
# students/spaces.py) without a registry entry: what a search's best.yaml writes.
ARCH_KEYWORDS = {"search": None, "custom": None}


class ImageStudentConfig(Strict):
    arch: str = "mobilevit_xxs"
    spec: dict[str, Any] | None = None  # arch=custom: e.g. {family: vit, patch_size: 8, embed_dim: 128, ...}

    @field_validator("arch")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_name(v, IMAGE_ARCHS | ARCH_KEYWORDS, "student")

    @model_validator(mode="after")
    def _spec(self) -> "ImageStudentConfig":
        _check_custom(self.arch, self.spec, "students.image", "check_image_spec")
        return self


class TextStudentConfig(Strict):
    arch: str = "text_tiny"
    spec: dict[str, Any] | None = None  # arch=custom: {family: text, width, layers, heads, mlp_ratio}
    context_length: int = Field(32, ge=4, le=512)
    vocab_size: int = Field(4096, ge=64, le=250_000)  # the pieces learnt from the corpus; the inventory comes on top
    # A generic character inventory the vocabulary always holds (issue 17): gb2312 = all of GB2312 (its 6,763 hanzi
    # and its symbols) plus printable ASCII, so a Chinese label outside the captions is spelt, not [UNK]; none = the
    # corpus's characters only (the vocabulary before issue 17).
    inventory: Literal["gb2312", "none"] = "gb2312"

    @field_validator("arch")
    @classmethod
    def _known(cls, v: str) -> str:
        return _check_name(v, TEXT_ARCHS | ARCH_KEYWORDS, "text student")

    @model_validator(mode="after")
    def _spec(self) -> "TextStudentConfig":
        _check_custom(self.arch, self.spec, "students.text", "check_text_spec")
        return self


def _check_custom(arch: str, spec: dict | None, where: str, checker: str) -> None:
    if arch == "custom" and spec is None:
        raise ValueError(f"{where}.spec: arch 'custom' needs a spec (a search's best.yaml writes one)")
    if arch != "custom" and spec is not None:
        raise ValueError(f"{where}.spec: only arch 'custom' takes a spec; set arch: custom or drop the spec")
    if spec is not None:
        import students.spaces

        try:
            getattr(students.spaces, checker)(spec)
        except (ValueError, KeyError, TypeError, ZeroDivisionError) as err:
            raise ValueError(f"{where}.{str(err).strip(chr(39))}") from None


class StudentsConfig(Strict):
    image: ImageStudentConfig = ImageStudentConfig()
    text: TextStudentConfig = TextStudentConfig()
    embed_dim: int = Field(128, ge=8, le=4096)


class StageConfig(Strict):
    """What every training stage shares; the one training loop (compress/train/loop.py) reads these."""

    enabled: bool = True
    epochs: int = Field(4, ge=0, le=100_000)
    batch_size: int = Field(128, ge=2, le=1_000_000)  # global batch (all processes, one optimizer step)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.05, ge=0, le=10)
    warmup: float = Field(0.1, ge=0, le=0.9)  # fraction of the steps with linear warm-up, then cosine decay
    grad_accum: int = Field(1, ge=1, le=1024)  # micro-batches per optimizer step (batch_size is split into them)
    clip_grad_norm: float = Field(0.0, ge=0, le=1e6)  # 0 = no clipping


class DistillConfig(StageConfig):
    lr: float = Field(2e-3, gt=0, le=10)
    map_weight: float = Field(1.0, ge=0, le=1e6)
    embed_weight: float = Field(1.0, ge=0, le=1e6)
    hidden_weight: float = Field(0.5, ge=0, le=1e6)
    # How the student's final embeddings meet the teacher's: `shared`, one linear adapter for both towers onto the
    # teacher's joint space (it also aligns the towers before stage 2); `per_tower`, an image adapter onto the
    # teacher's image embedding and a separate text adapter onto its text embedding; `none`, no embedding term
    # (feature maps and text hidden states only).
    embed_adapter: Literal["shared", "per_tower", "none"] = "shared"
    # For one-language (English-only) teachers: a Chinese caption's embedding target is the teacher's embedding of
    # the same sample's English caption (rows without one get no embedding term); its hidden-state targets are skipped.
    cross_lingual: bool = False
    # Unpaired stage-1 data (stage 2's contrastive terms use pairs only; align.retain > 0 also runs stage 2 over these
    # rows, for its anchor term). `unpaired_images`: images with no caption, for the image
    # tower's distillation only; `text_only`: text with no image, for the text tower's, in each language it has.
    # "world": the S/K/U world's K classes (data.split_seed): K's train renders as images, K's names (both languages,
    # templated) as text. Otherwise a path: images, a JSONL manifest of {"image": path} rows (paths relative to its
    # folder); text, a JSONL of {"en": ..., "zh": ...} rows or a .txt of one caption (or label) per line.
    unpaired_images: str | None = Field(None, min_length=1)
    text_only: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _cross_lingual_needs_embedding(self) -> "DistillConfig":
        if self.cross_lingual and self.embed_adapter == "none":
            raise ValueError("distill.cross_lingual: it retargets the text embedding term, which distill.embed_adapter "
                             "'none' drops; use embed_adapter shared or per_tower, or cross_lingual: false")
        return self


class AlignConfig(StageConfig):
    batch_size: int = Field(256, ge=2, le=1_000_000)
    image_lr_scale: float = Field(1.0, gt=0, le=1e3)  # BN convnets from scratch take a larger step than the text transformer
    init_temperature: float = Field(0.07, gt=0, lt=1)
    margin_reg: float = Field(0.0, ge=0, le=1e6)
    margin: float = Field(0.5, ge=-1, le=1)
    # The positive-pair term's shape (compress/train/losses.py MarginRegularizer), on s_ii = cos(image_i, text_i):
    # hinge relu(margin - s_ii) (inert once positives pass `margin`), linear 1 - s_ii (Chen et al.: always on),
    # square (1 - s_ii)^2 (always on, fading near 1). Only `hinge` reads `margin`.
    margin_form: Literal["hinge", "linear", "square"] = "hinge"
    # TinyCLIP-style affinity mimicking: KL between the teacher's and the student's in-batch image-text
    # similarity distributions (needs a teacher); 0 = off.
    affinity_weight: float = Field(0.0, ge=0, le=1e6)
    # Keep what stage 1 taught (issue 16): > 0 runs stage 2 over stage 1's data (the pairs plus distill.unpaired_images
    # / text_only rows) and adds, with this weight, the cosine distance of each tower's embeddings to the frozen
    # stage-1 student's on every row; the contrastive terms still see pairs only. Contrastive training on S alone
    # otherwise drifts the towers away from what they learnt of K. 0 = off (stage 2 on pairs only).
    retain: float = Field(0.0, ge=0, le=1e6)
    # The pseudo-label baseline (issue 16): stage 2 also trains on distill.unpaired_images, each captioned by the
    # teacher's zero-shot guess among distill.text_only's names. Needs both keys set (stage 1 may be off).
    pseudo_label: bool = False


class QATConfig(StageConfig):
    epochs: int = Field(1, ge=0, le=100_000)
    batch_size: int = Field(256, ge=2, le=1_000_000)
    lr: float = Field(1e-4, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=10)
    # The quantization scheme this stage trains (compress/quant/schemes.py): int8 (PT2E static QAT), 8da8w / 8da4w
    # (torchao QAT), ptq-int8 (calibration only), ft-ptq-int8 (the fp32 towers fine-tuned with these settings, no
    # fake-quant, then ptq-int8: PTQ at equal training). `compare`: more schemes built from the same fp32 student (QAT
    # with these settings, or calibration) and exported beside it, so the report compares sizes, latency and accuracy.
    scheme: str = "int8"
    compare: list[str] = Field(default_factory=list, max_length=8)
    # Weight of a self-distillation term: cosine distance between each fake-quantised tower's embeddings and the
    # frozen fp32 student's on the same inputs. It pulls the int8 model toward the model it approximates, which
    # is what post-training calibration cannot do; 0 = contrastive loss only.
    self_distill: float = Field(0.0, ge=0, le=1e6)
    # Weight of the contrastive (+ margin) loss in QAT; 0 with self_distill > 0: QAT learns only to reproduce the
    # fp32 student (its eval is what int8 should match), not the training captions again.
    contrastive: float = Field(1.0, ge=0, le=1e6)
    # true: QAT starts from ptq-int8 itself: the ptq-int8 calibration (the ptq_* settings below) sets the activation
    # ranges, which stay frozen (static int8 only), so QAT at lr 0 is ptq-int8 and training moves the weights alone.
    calibrate: bool = False
    # Post-training calibration, for every one the run does (ptq-int8, ft-ptq-int8 and qat.calibrate's seed ranges);
    # the defaults are what ptq-int8 always did. Batches of 64 training rows (compress/quant/calibrate.py); the static
    # activation observer (histogram: the XNNPACK config's, clips outliers; minmax: the full range); per-channel
    # linear weights (null: per tower as export always did, text per-channel, image per-tensor for a smaller .pte).
    ptq_calibration_batches: int = Field(4, ge=1, le=1024)
    ptq_observer: Literal["histogram", "minmax"] = "histogram"
    ptq_per_channel: bool | None = None

    @model_validator(mode="after")
    def _has_a_loss(self) -> "QATConfig":
        if self.contrastive == 0 and self.self_distill == 0:
            raise ValueError("qat.contrastive 0 with qat.self_distill 0 leaves QAT no loss; set qat.self_distill > 0 "
                             "(or qat.contrastive > 0)")
        return self

    @field_validator("scheme")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        from compress.quant.schemes import check_scheme_name

        if v == "fp32":
            raise ValueError("qat.scheme: 'fp32' is no quantization; set qat.enabled: false instead")
        return check_scheme_name(v)

    @field_validator("compare")
    @classmethod
    def _known_compare(cls, v: list[str]) -> list[str]:
        from compress.quant.schemes import check_scheme_name

        for i, name in enumerate(v):
            if name == "fp32":
                raise ValueError("qat.compare: 'fp32' is in the report whenever export.quant has it; list "
                                 "quantization schemes only")
            try:
                check_scheme_name(name)
            except ValueError as err:
                raise ValueError(f"qat.compare.{i}: {err}") from None
        if len(set(v)) != len(v):
            raise ValueError("qat.compare: name each scheme once")
        return v

    @model_validator(mode="after")
    def _compare_not_scheme(self) -> "QATConfig":
        if self.scheme in self.compare:
            raise ValueError(f"qat.compare: {self.scheme!r} is already qat.scheme; list the other schemes only")
        return self

    @property
    def schemes(self) -> list[str]:
        """The headline scheme first, then the ones it is compared with."""
        return [self.scheme, *self.compare]


class TrainingConfig(Strict):
    """Run-wide training settings: precision, checkpoints and logs (per-stage settings live in each stage)."""

    # auto = bf16 autocast where the device has it (CUDA with bf16), else fp32; CPU runs stay fp32 and bit-exact.
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    checkpoint_every: int = Field(50, ge=1, le=10_000_000)  # optimizer steps between mid-stage checkpoints
    keep_last: int = Field(2, ge=1, le=1000)  # mid-stage checkpoints kept per stage
    tensorboard: bool = True  # scalars also go to runs/<name>/logs/ as CSV, always


def target_names() -> list[str]:
    """The lowering targets' names (mobile_export/lower/targets.py): importing the table imports no SDK."""
    from mobile_export.lower.targets import target_names as names

    return names()


def npu_targets() -> list[str]:
    """export.npu: the int8-only accelerators of the target table (Arm Ethos-U today), exported beside the main
    target so the report sets their compiler estimate beside the host latency."""
    from mobile_export.lower.targets import TARGETS

    return sorted(n for n, t in TARGETS.items() if t.int8_only)


class ExportConfig(Strict):
    target: str = "xnnpack"  # a lowering target's name (`dcclip-compress targets` lists them)
    quant: list[Literal["fp32", "int8"]] = ["fp32", "int8"]
    enabled: bool = True
    # Also export int8 for these NPUs (export-<target>/): the run report sets their compiler's estimate per tower
    # beside the host latency.
    npu: list[str] = []

    @field_validator("target")
    @classmethod
    def _known_target(cls, v: str) -> str:
        return _check_name(v, target_names(), "target")

    @field_validator("npu")
    @classmethod
    def _known_npus(cls, v: list[str]) -> list[str]:
        known = npu_targets()
        for i, name in enumerate(v):
            if name not in known:
                what = "is a target but not an int8 NPU" if name in target_names() else "is not a known NPU target"
                raise ValueError(f"export.npu.{i}: {name!r} {what}; {did_you_mean(name, known)}")
        return v

    @model_validator(mode="after")
    def _int8_only_target(self) -> "ExportConfig":
        if self.enabled and "fp32" in self.quant and self.target in npu_targets():
            raise ValueError(f"export.quant: target {self.target!r} runs int8 only; set export.quant: [int8] "
                             "(or export it beside the main target with export.npu)")
        return self


# `val` / `val_known` (the S/K/U world): renders of S / K that no reported split holds, for choosing settings.
EVAL_SPLITS = ("known", "eval", "transfer", "unseen", "unseen_sibling", "unseen_novel", "unseen_flags", "val",
               "val_known")


class EvalConfig(Strict):
    # known and the unseen strata exist only in the S/K/U world (data.split_seed); a split the data lacks is skipped
    splits: list[Literal[EVAL_SPLITS]] = ["eval", "transfer", "unseen"]
    latency_runs: int = Field(20, ge=1, le=100_000)
    batch_size: int = Field(256, ge=1, le=65_536)


class RelativeBudget(Strict):
    """`factor` x the reference tower's int8 .pte latency, the reference timed in the same sitting as each candidate:
    the same answer on a busy laptop, an idle CI box or a phone."""

    reference: str | dict[str, Any]  # a registered student (mobilevit_xxs, text_tiny) or a searched spec
    factor: float = Field(1.0, gt=0, le=1000)
    image_size: int | None = Field(None, ge=16, le=1024)  # the reference's input; default data.image_size
    context_length: int | None = Field(None, ge=4, le=512)  # a text reference's; default students.text.context_length

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: str | dict) -> str | dict:
        if isinstance(v, dict):
            from students.spaces import check_image_spec, check_text_spec

            (check_text_spec if v.get("family") == "text" else check_image_spec)(v)
        elif v not in _all_arch_names():
            raise ValueError(f"reference {v!r} is not a registered student; {did_you_mean(v, _all_arch_names())}")
        return v


def _all_arch_names() -> dict[str, Any]:
    return {**IMAGE_ARCHS, **TEXT_ARCHS}


def _budget_kind(v: Any) -> str:
    return "relative" if isinstance(v, (dict, RelativeBudget)) else "ms"


# A number is ms; a mapping is {reference, factor}: a tagged union, so an error names the one form that was meant.
TowerBudget = Annotated[Annotated[Annotated[float, Field(gt=0, le=1e5)], Tag("ms")]
                        | Annotated[RelativeBudget, Tag("relative")], Discriminator(_budget_kind)]


class SearchBudget(Strict):
    """Per tower: int8 .pte median ms on `search.device`, or {reference, factor}; a tower with no budget is not
    searched."""

    image: TowerBudget | None = None
    text: TowerBudget | None = None


class SearchImageSpace(Strict):
    families: list[Literal["vit", "mobilevit", "mobilevitv2", "fastvit", "mobilenetv4"]] = [
        "vit", "mobilevit", "mobilevitv2", "fastvit", "mobilenetv4"]
    image_sizes: list[Annotated[int, Field(strict=True, ge=32, le=512)]] = Field([64], min_length=1, max_length=8)

    @field_validator("families")
    @classmethod
    def _families(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("search.space.image.families: name each family once, at least one")
        return v


class SearchTextSpace(Strict):
    widths: list[Annotated[int, Field(strict=True, ge=16, le=1024)]] = Field([64, 96, 128, 192], min_length=1)
    layers: list[Annotated[int, Field(strict=True, ge=1, le=24)]] = Field([1, 2, 3, 4], min_length=1)
    heads: list[Annotated[int, Field(strict=True, ge=1, le=32)]] = Field([2, 4], min_length=1)
    mlp_ratios: list[Annotated[float, Field(gt=0, le=8)]] = Field([2.0, 4.0], min_length=1)
    context_lengths: list[Annotated[int, Field(strict=True, ge=4, le=512)]] = Field([16, 24, 32], min_length=1)

    @model_validator(mode="after")
    def _divisible(self) -> "SearchTextSpace":
        if not any(w % h == 0 for w in self.widths for h in self.heads):
            raise ValueError("search.space.text: no width is divisible by any heads value; add e.g. width 128 with heads 4")
        return self


class SearchSpace(Strict):
    image: SearchImageSpace = SearchImageSpace()
    text: SearchTextSpace = SearchTextSpace()


class SearchTrials(Strict):
    image: int = Field(32, ge=1, le=10_000)  # candidates drawn from the space (sized, predicted, some measured)
    text: int = Field(8, ge=1, le=10_000)


class SearchProxy(Strict):
    """Successive halving: `candidates` train `steps` stage-1 steps; the best 1/eta continue for eta x more, ..."""

    candidates: int = Field(6, ge=1, le=1000)  # the first rung: measured candidates under budget
    steps: int = Field(30, ge=1, le=1_000_000)  # optimizer steps of the first rung (rounded up to whole epochs)
    eta: int = Field(2, ge=2, le=16)
    batch_size: int = Field(64, ge=2, le=65_536)
    holdout: int = Field(256, ge=8, le=1_000_000)  # held-out training samples (one per class) the proxy scores on


# search.device: where candidates are timed (compress/search/latency.py); `adb` takes an optional :SERIAL.
SEARCH_DEVICES = ("host", "adb")
_SERIAL = re.compile(r"[A-Za-z0-9._:-]+")


class SearchConfig(Strict):
    budget: SearchBudget = SearchBudget()
    # The tower every measurement is timed against, when a tower's budget is in ms (a relative budget names its own).
    reference: dict[Literal["image", "text"], str] = {"image": "mobilevit_xxs", "text": "text_tiny"}
    parallel: bool = True  # measure in a separate process on one core while proxy training runs on the others
    device: str = "host"  # host, adb, or adb:SERIAL
    threads: int = Field(1, ge=1, le=256)  # XNNPACK threads (host); part of the latency table key
    quant: list[Literal["int8", "fp32"]] = ["int8", "fp32"]  # what is lowered and timed; the budget is on int8
    latency_runs: int = Field(50, ge=1, le=100_000)  # timed calls per candidate and quant, and as many of the reference
    latency_rounds: int = Field(5, ge=1, le=1000)  # alternating reference / candidate blocks they are split into
    seed_measurements: int = Field(2, ge=1, le=100)  # per family, before the predictor prunes
    max_measurements: int = Field(24, ge=1, le=10_000)  # per tower: lowerings (table misses and hits) at most
    # The predictor prunes when predicted > budget * (1 + band): band = its largest error so far, at least this.
    predictor_margin: float = Field(0.25, ge=0, le=10)
    space: SearchSpace = SearchSpace()
    trials: SearchTrials = SearchTrials()
    proxy: SearchProxy = SearchProxy()
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="before")
    @classmethod
    def _budget_alias(cls, data: Any) -> Any:
        """`budget_ms` is the older name of `budget` (recipes from before relative budgets)."""
        if isinstance(data, dict) and "budget_ms" in data:
            if "budget" in data:
                raise ValueError("search: budget_ms is the older name of budget; keep one of them")
            data = {("budget" if k == "budget_ms" else k): v for k, v in data.items()}
        return data

    @field_validator("quant")
    @classmethod
    def _quant(cls, v: list[str]) -> list[str]:
        if "int8" not in v or len(set(v)) != len(v):
            raise ValueError("search.quant: must include int8 (the budget is on int8 latency), each value once")
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        name, colon, serial = v.partition(":")
        _check_name(name, SEARCH_DEVICES, "search device")
        if colon and (name != "adb" or not _SERIAL.fullmatch(serial)):
            raise ValueError(f"search.device: {v!r} is not a device; write host, adb, or adb:SERIAL "
                             "(the serial `adb devices` lists)")
        return v


class Recipe(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)
    seed: int = Field(0, ge=0, le=2**31 - 1)  # numpy seeds are non-negative; stages use seed + 1, seed + 2
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    students: StudentsConfig = StudentsConfig()
    distill: DistillConfig = DistillConfig()
    align: AlignConfig = AlignConfig()
    qat: QATConfig = QATConfig()
    training: TrainingConfig = TrainingConfig()
    export: ExportConfig = ExportConfig()
    eval: EvalConfig = EvalConfig()
    search: SearchConfig = SearchConfig()

    @model_validator(mode="after")
    def _unpaired_fits(self) -> "Recipe":
        for key in ("unpaired_images", "text_only"):
            value = getattr(self.distill, key)
            if value == "world" and (self.data.split_seed is None or self.data.pairs != "students"):
                raise ValueError(f"distill.{key}: 'world' is the S/K/U world's K data; set data.split_seed (with "
                                 "data.pairs: students), or give a path")
            if value is not None and self.teacher.cache is not None:
                raise ValueError(f"distill.{key}: not yet with teacher.cache (the cache holds targets of pairs only); "
                                 "unset teacher.cache to run the teacher online")
        if self.align.retain > 0 and self.align.enabled and not (self.distill.enabled and self.distill.epochs > 0):
            raise ValueError("align.retain: it anchors stage 2 to the stage-1 student, and stage 1 is off here (it "
                             "would anchor to the random init); set align.retain: 0 or enable distill")
        if self.align.retain > 0 and self.align.pseudo_label:
            raise ValueError("align.retain with align.pseudo_label: the pseudo-labelled pairs replace stage 1's rows in "
                             "stage 2; use one of them")
        if self.align.pseudo_label and (self.distill.unpaired_images is None or self.distill.text_only is None
                                        or self.teacher.kind == "none"):
            raise ValueError("align.pseudo_label: the teacher labels distill.unpaired_images with distill.text_only's "
                             "names; set both (and a teacher), or pseudo_label: false")
        return self

    @model_validator(mode="after")
    def _search_budget(self) -> "Recipe":
        for tower in ("image", "text"):
            if getattr(self.students, tower).arch == "search" and getattr(self.search.budget, tower) is None:
                raise ValueError(f"search.budget.{tower}: students.{tower}.arch is 'search'; give a latency budget, "
                                 f"e.g. search: {{budget: {{{tower}: {{reference: mobilevit_xxs, factor: 1.0}}}}}} "
                                 "or a number of ms")
        return self

    def fingerprint(self) -> str:
        """Hash of everything that changes the trained weights (used to cache the reference teacher).

        TRAINING_VERSION is part of it: a change to the loop, the sampler or the augmentation retrains cached teachers.
        """
        return hashlib.sha256(json.dumps(self.fingerprint_payload(), sort_keys=True).encode()).hexdigest()[:16]

    def first_difference(self, other: "Recipe", skip: frozenset[str] = frozenset()) -> tuple[str, Any, Any] | None:
        """(dotted key, this recipe's value, `other`'s) of the first weight-shaping value that differs, top-level
        sections in `skip` left out; None when they agree. A key only one of them has reads "(unset)" there."""

        def walk(x: Any, y: Any, path: str) -> tuple[str, Any, Any] | None:
            if isinstance(x, dict) and isinstance(y, dict):
                for k in list(x) + [k for k in y if k not in x]:
                    found = walk(x.get(k, "(unset)"), y.get(k, "(unset)"), f"{path}.{k}" if path else k)
                    if found:
                        return found
                return None
            return None if x == y else (path, x, y)

        a, b = ({k: v for k, v in r.fingerprint_payload().items() if k not in skip} for r in (self, other))
        return walk(a, b, "")

    def fingerprint_payload(self) -> dict:
        """What `fingerprint` hashes: the recipe minus what cannot change trained weights, and minus keys added later
        while they hold their defaults (so a recipe written before a key keeps its hash)."""
        # export.npu (which extra .pte files are lowered) does not change trained weights either.
        # qat.compare only adds models beside the run's own; qat.scheme int8 is what every recipe trained before it
        # was a key, so it stays out and those recipes keep their hash.
        payload = self.model_dump(exclude={"eval": True, "search": True, "export": {"npu"}, "qat": {"compare"},
                                            "training": {"checkpoint_every", "keep_last", "tensorboard"}})
        if payload["qat"]["scheme"] == "int8":
            del payload["qat"]["scheme"]
        for key, off in (("self_distill", 0), ("calibrate", False), ("contrastive", 1.0),  # recipes from before these
                         ("ptq_calibration_batches", 4), ("ptq_observer", "histogram"),  # keys keep their hash
                         ("ptq_per_channel", None)):
            if payload["qat"][key] == off:
                del payload["qat"][key]
        if payload["align"]["margin_form"] == "hinge":  # recipes from before align.margin_form keep their hash
            del payload["align"]["margin_form"]
        # stage-1 options at their defaults (today's stage 1) stay out, so recipes from before these keys keep their hash
        for section, key, off in (("distill", "embed_adapter", "shared"), ("distill", "cross_lingual", False),
                                  ("teacher", "text_layers", None), ("distill", "unpaired_images", None),
                                  ("distill", "text_only", None), ("align", "retain", 0.0),
                                  ("align", "pseudo_label", False), ("teacher", "cache_maps", "full")):
            if payload[section][key] == off:
                del payload[section][key]
        payload["data"].pop("workers", None)  # where images are decoded changes no batch
        if payload["data"]["split_seed"] is None:  # today's world: recipes from before the S/K/U keys keep their hash
            for key in ("split_seed", "student_fraction", "pairs"):
                del payload["data"][key]
        if payload["students"]["text"]["inventory"] == "none":  # the vocabulary of before the inventory (issue 17)
            del payload["students"]["text"]["inventory"]
        for tower in ("image", "text"):  # unset specs stay out, so recipes from before `spec` keep their hash
            if payload["students"][tower].get("spec") is None:
                payload["students"][tower].pop("spec", None)
        payload["training_version"] = TRAINING_VERSION
        return payload


def _check_name(value: str, known, kind: str) -> str:
    """`value` if it is one of the `known` names, else a ValueError with the did-you-mean every name check shares."""
    if value not in known:
        raise ValueError(f"{value!r} is not a known {kind}; {did_you_mean(value, known)}")
    return value
