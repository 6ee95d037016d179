"""Label sets: the default emoji classes, a user's file or a typed list, in en and zh or in one of them, and their
text embeddings through prompt templates.

A label may have one language: its other language's row uses the name it has, in that name's own templates (a label
typed as "狗" is embedded as "{}的照片" in both rows). Templates come from what the model was trained on
(`compress.prompts.data_templates`) or the user (`--template`); an embedding is the normalised mean of the normalised
template embeddings. An app that only classifies photos against fixed labels ships the image tower and these
embeddings, without the text tower: `labels.json` + `label_embeddings_<quant>.f32` (mobile_export.bundle.write).
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from compress.errors import UserError
from compress.prompts import EMOJI_TEMPLATES, LANGS, Templates, caption_lang
from compress.readers import parse_json, read_text


class UnknownTokenWarning(UserWarning):
    """A label holds characters the model's tokenizer maps to [UNK]: the model cannot read them."""


@dataclass(frozen=True)
class Label:
    en: str | None = None
    zh: str | None = None
    id: str | None = None
    emoji: str | None = None

    def __post_init__(self) -> None:
        if not (self.en or self.zh):
            raise UserError("labels: a label needs a name in en or zh")

    def name(self, lang: str) -> str:
        """The label's name in `lang`, else in its other language."""
        return getattr(self, lang) or getattr(self, LANGS[1 - LANGS.index(lang)])

    def text_lang(self, lang: str) -> str:
        """Whose templates wrap `name(lang)`: `lang` when the label has that name, else the other language."""
        return lang if getattr(self, lang) else LANGS[1 - LANGS.index(lang)]

    @property
    def display(self) -> str:
        return " / ".join(n for n in (self.en, self.zh) if n)

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("id", self.id), ("emoji", self.emoji), ("en", self.en), ("zh", self.zh)) if v is not None}


def as_label(item: str | Mapping[str, Any] | Label) -> Label:
    """A label from a Label, an {en, zh} mapping (either may be missing), or a name in either language."""
    if isinstance(item, Label):
        return item
    if isinstance(item, str):
        name = " ".join(item.split())
        if not name:
            raise UserError("labels: an empty label; give each label a name in en or zh")
        return Label(**{caption_lang(name): name})
    if isinstance(item, Mapping):
        names = {lang: " ".join(str(item[lang]).split()) for lang in LANGS if item.get(lang) is not None}
        names = {lang: n for lang, n in names.items() if n}
        if not names:
            raise UserError(f"labels: {dict(item)!r} has no en or zh name")
        ident, glyph = item.get("id"), item.get("emoji")
        return Label(**names, id=None if ident in (None, "") else str(ident),
                     emoji=glyph if isinstance(glyph, str) and glyph else None)
    raise UserError(f"labels: {item!r} is not a label; give a name, an {{en, zh}} mapping or a Label")


def as_labels(items: Sequence[str | Mapping[str, Any] | Label]) -> list[Label]:
    labels = [as_label(i) for i in items]
    if not labels:
        raise UserError("labels: no labels given; pass at least one name")
    return labels


def emoji_labels() -> list[Label]:
    """The default label set: every emoji-zh-en class (what the students are trained and evaluated on)."""
    from compress.data.emoji import emoji_classes

    return [Label(c.en, c.zh, id=str(c.index), emoji=c.emoji) for c in emoji_classes()]


LABELS_HELP = ("a .jsonl file with one {\"en\": ..., \"zh\": ...} object per line (either may be missing; optional "
               "\"id\"), a .tsv file whose first line names an en and/or a zh column (optional id), or a .txt file with "
               "one name per line")


def _check_rows(rows: list[tuple[int, dict]], path: Path) -> list[Label]:
    labels: list[Label] = []
    seen: dict[tuple[str, str], int] = {}
    for line, row in rows:
        values = {}
        for lang in LANGS:
            value = row.get(lang)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            if not isinstance(value, str):
                raise UserError(f"labels: {str(path)}:{line} has a {lang} name that is not text ({value!r}); "
                                f"expected {LABELS_HELP}")
            values[lang] = " ".join(value.split())
        if not values:
            raise UserError(f"labels: {str(path)}:{line} has no en or zh name; every label needs one ({LABELS_HELP})")
        for lang, value in values.items():
            key = (lang, value.lower())
            if key in seen:
                raise UserError(f"labels: {str(path)}:{line} repeats the {lang} name {value!r} of line "
                                f"{seen[key]}; two labels with one name cannot be told apart")
            seen[key] = line
        ident = row.get("id")
        labels.append(Label(**values, id=None if ident in (None, "") else str(ident)))
    if not labels:
        raise UserError(f"labels: {str(path)!r} holds no labels; expected {LABELS_HELP}")
    return labels


def read_labels(path: str | Path) -> list[Label]:
    """A user's label list (`export --labels FILE`): JSONL or TSV with en and zh columns; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labels: {str(path)!r} not found; pass {LABELS_HELP}")
    text = read_text(path, "labels: file", "save it as UTF-8 text", encoding="utf-8-sig")
    suffix = path.suffix.lower()
    rows: list[tuple[int, dict]] = []
    if suffix in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            row = parse_json(line, f"{path}:{number}", "labels: line", f"expected {LABELS_HELP}")
            rows.append((number, row))
    elif suffix in (".tsv", ".tab"):
        lines = [(n, l) for n, l in enumerate(text.splitlines(), 1) if l.strip()]
        if not lines:
            raise UserError(f"labels: {str(path)!r} is empty; expected {LABELS_HELP}")
        header = [h.strip().lower() for h in lines[0][1].split("\t")]
        if not any(lang in header for lang in LANGS):
            raise UserError(f"labels: {str(path)}:{lines[0][0]} (the header) names no en or zh column; "
                            f"it has: {', '.join(header)}; expected {LABELS_HELP}")
        for number, line in lines[1:]:
            cells = next(csv.reader([line], delimiter="\t"))
            if len(cells) != len(header):
                raise UserError(f"labels: {str(path)}:{number} has {len(cells)} tab-separated cells, the header "
                                f"{len(header)}")
            rows.append((number, dict(zip(header, cells))))
    elif suffix == ".txt":
        rows = [(n, {caption_lang(line): line}) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        raise UserError(f"labels: {str(path)!r} has an unknown extension {suffix or '(none)'!r}; pass {LABELS_HELP}")
    return _check_rows(rows, path)


def parse_labels(value: str) -> list[Label]:
    """`--labels`: a label file (see `read_labels`), or a comma-separated list of names in either language."""
    path = Path(value)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".tsv", ".tab", ".txt") or path.is_file():
        return read_labels(path)
    if "," not in value and "，" not in value and (path.suffix or "/" in value or "\\" in value):
        raise UserError(f"--labels {value!r}: no such label file; pass {LABELS_HELP}, or names such as dog,cat,狗")
    names = [v for v in value.replace("，", ",").split(",") if v.strip()]
    if not names:
        raise UserError(f"--labels {value!r}: give a label file or a comma-separated list of names, e.g. dog,cat,狗")
    return as_labels(names)


def label_prompts(labels: Sequence[Label], lang: str, templates: Templates | None = None, index: int = 0) -> list[str]:
    """The `index`-th prompt of each label's `lang` row (its own name in its own language's template)."""
    templates = templates or EMOJI_TEMPLATES
    return [_template(templates, label.text_lang(lang), index).format(label.name(lang)) for label in labels]


def _template(templates: Templates, lang: str, index: int) -> str:
    ts = templates.get(lang) or ["{}"]
    return ts[index % len(ts)]


def embed_rows(encode: Callable[[list[str]], torch.Tensor], labels: Sequence[Label], lang: str,
               templates: Templates | None = None, batch: int = 256, advance: Callable[[str], None] | None = None
               ) -> torch.Tensor:
    """(N, D) float32 L2-normalised embeddings of the labels' `lang` row: per label, the normalised mean of its
    normalised template embeddings (one template: that embedding)."""
    templates = templates or EMOJI_TEMPLATES
    out: list[torch.Tensor | None] = [None] * len(labels)
    for text_lang in LANGS:
        idx = [i for i, label in enumerate(labels) if label.text_lang(lang) == text_lang]
        names = [labels[i].name(lang) for i in idx]
        ts = templates.get(text_lang) or ["{}"]
        for start in range(0, len(idx), batch):
            chunk = names[start : start + batch]
            embs = [torch.nn.functional.normalize(encode([t.format(n) for n in chunk]).float(), dim=-1) for t in ts]
            rows = embs[0] if len(embs) == 1 else torch.nn.functional.normalize(torch.stack(embs).mean(0), dim=-1)
            for j, row in zip(idx[start : start + batch], rows):
                out[j] = row
            if advance is not None:
                advance(lang)
    return torch.stack(out) if out else torch.zeros(0)


def embed_labels(encode: Callable[[list[str]], torch.Tensor], labels: Sequence[Label], batch: int = 256,
                 description: str = "label embeddings", templates: Templates | None = None) -> np.ndarray:
    """(2, N, D) float32, L2-normalised rows, language order `LANGS` (en, zh)."""
    from compress.progress import progress_bar

    templates = templates or EMOJI_TEMPLATES
    steps = sum(-(-sum(1 for lb in labels if lb.text_lang(lang) == tl) // batch) for lang in LANGS for tl in LANGS)
    with progress_bar(description, steps) as advance, torch.no_grad():
        stacked = torch.stack([embed_rows(encode, labels, lang, templates, batch, advance) for lang in LANGS])
    return stacked.numpy().astype("<f4")


def unknown_warnings(tokenizer, labels: Sequence[Label]) -> list[str]:
    """One line per label name the tokenizer partly spells as [UNK] (the model cannot read those characters, so the
    label is scored on the rest of its name, or on nothing)."""
    lines = []
    for label in labels:
        for lang in LANGS:
            name = getattr(label, lang)
            spans = tokenizer.unknown_spans(name) if name else []
            if spans:
                shown = ", ".join(repr(s) for s in spans[:5]) + (", ..." if len(spans) > 5 else "")
                lines.append(f"label {name!r} ({lang}): {shown} not in this model's vocabulary ([UNK]); it cannot "
                             "read that part, so the label is scored on the rest of its name (use other words, or "
                             "train with students.text.inventory: gb2312 for Chinese characters)")
    return lines


def warn_unknown(tokenizer, labels: Sequence[Label]) -> list[str]:
    """`unknown_warnings`, each also issued as an `UnknownTokenWarning` (the Python API's channel)."""
    lines = unknown_warnings(tokenizer, labels)
    for line in lines:
        warnings.warn(line, UnknownTokenWarning, stacklevel=3)
    return lines
