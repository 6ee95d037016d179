"""Label sets of an export bundle: the default emoji classes or a user's file (`export --labels FILE`), in en and zh,
and their text embeddings in the zero-shot prompt the students were evaluated with.

An app that only classifies photos against fixed labels ships the image tower and these embeddings, without the text
tower: `labels.json` + `label_embeddings_<quant>.f32` (mobile_export.bundle.write).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from compress.errors import UserError
from compress.prompts import EVAL_TEMPLATE, LANGS
from compress.readers import parse_json, read_text


@dataclass(frozen=True)
class Label:
    en: str
    zh: str
    id: str | None = None
    emoji: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("id", self.id), ("emoji", self.emoji), ("en", self.en), ("zh", self.zh)) if v is not None}


def emoji_labels() -> list[Label]:
    """The default label set: every emoji-zh-en class (what the students are trained and evaluated on)."""
    from compress.data.emoji import emoji_classes

    return [Label(c.en, c.zh, id=str(c.index), emoji=c.emoji) for c in emoji_classes()]


LABELS_HELP = ("a .jsonl file with one {\"en\": ..., \"zh\": ...} object per line (optional \"id\"), or a .tsv file "
               "whose first line names the columns en and zh (optional id)")


def _check_rows(rows: list[tuple[int, dict]], path: Path) -> list[Label]:
    labels: list[Label] = []
    seen: dict[tuple[str, str], int] = {}
    for line, row in rows:
        values = {}
        for lang in LANGS:
            value = row.get(lang)
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"labels: {str(path)}:{line} has no {lang} name; every label needs both en and zh "
                                f"({LABELS_HELP})")
            values[lang] = " ".join(value.split())
        for lang in LANGS:
            key = (lang, values[lang].lower())
            if key in seen:
                raise UserError(f"labels: {str(path)}:{line} repeats the {lang} name {values[lang]!r} of line "
                                f"{seen[key]}; two labels with one name cannot be told apart")
            seen[key] = line
        ident = row.get("id")
        labels.append(Label(values["en"], values["zh"], id=None if ident in (None, "") else str(ident)))
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
        missing = [lang for lang in LANGS if lang not in header]
        if missing:
            raise UserError(f"labels: {str(path)}:{lines[0][0]} (the header) names no {' or '.join(missing)} column; "
                            f"it has: {', '.join(header)}; expected {LABELS_HELP}")
        for number, line in lines[1:]:
            cells = next(csv.reader([line], delimiter="\t"))
            if len(cells) != len(header):
                raise UserError(f"labels: {str(path)}:{number} has {len(cells)} tab-separated cells, the header "
                                f"{len(header)}")
            rows.append((number, dict(zip(header, cells))))
    else:
        raise UserError(f"labels: {str(path)!r} has an unknown extension {suffix or '(none)'!r}; pass {LABELS_HELP}")
    return _check_rows(rows, path)


def label_prompts(labels: Sequence[Label], lang: str) -> list[str]:
    """Label names in the zero-shot prompt the students were evaluated with ("an emoji of {}", "{}的表情符号")."""
    return [EVAL_TEMPLATE[lang].format(getattr(label, lang)) for label in labels]


def embed_labels(encode: Callable[[list[str]], torch.Tensor], labels: Sequence[Label], batch: int = 256,
                 description: str = "label embeddings") -> np.ndarray:
    """(2, N, D) float32, L2-normalised rows, language order `LANGS` (en, zh)."""
    from compress.progress import progress_bar

    chunks = [(lang, i) for lang in LANGS for i in range(0, len(labels), batch)]
    out: dict[str, list[torch.Tensor]] = {lang: [] for lang in LANGS}
    with progress_bar(description, len(chunks)) as advance, torch.no_grad():
        for lang, i in chunks:
            out[lang].append(encode(label_prompts(labels[i : i + batch], lang)).float())
            advance(lang)
    stacked = torch.stack([torch.cat(out[lang]) for lang in LANGS])
    return torch.nn.functional.normalize(stacked, dim=-1).numpy().astype("<f4")
