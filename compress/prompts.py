"""Caption templates per language. Training samples a template; zero-shot eval uses `EVAL_TEMPLATE`."""
from __future__ import annotations

import random
import re
from typing import Sequence

from compress.errors import UserError

TEMPLATES: dict[str, list[str]] = {
    "en": ["{}", "an emoji of {}", "a {} emoji", "an icon of {}", "a picture of {}"],
    "zh": ["{}", "{}的表情符号", "一个{}表情", "{}的图标", "一张{}的图片"],
}
EVAL_TEMPLATE = {"en": "an emoji of {}", "zh": "{}的表情符号"}
LANGS = ("en", "zh")

# Zero-shot prompt templates per language for labels (export, classify, the app): a label's embedding is the
# normalised mean of its normalised template embeddings (CLIP's prompt ensembling; one template: that embedding).
Templates = dict[str, list[str]]
EMOJI_TEMPLATES: Templates = {lang: [t] for lang, t in EVAL_TEMPLATE.items()}  # what the emoji world was evaluated with
# Photos (a manifest or webdataset corpus): the first five of CLIP's ImageNet templates and their Chinese-CLIP
# counterparts, in the same order (compress/eval_data/elevater/{en,zh}.json hold the full lists; SOURCES.md).
PHOTO_TEMPLATES: Templates = {
    "en": ["a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
           "a photo of the hard to see {}."],
    "zh": ["{}的照片", "质量差的{}的照片", "许多{}的照片", "{}的雕塑", "难以看到{}的照片"],
}


def data_templates(kind: str | None) -> Templates:
    """The label templates that suit what a model was trained on: the emoji world's own, else photo templates."""
    return {lang: list(ts) for lang, ts in (EMOJI_TEMPLATES if kind in (None, "emoji") else PHOTO_TEMPLATES).items()}


def is_template(t: object) -> bool:
    """One `{}` and nothing else `str.format` would read ('{x}', a lone '}')."""
    if not isinstance(t, str) or t.count("{}") != 1:
        return False
    try:
        return t.format("x") == t.replace("{}", "x")
    except (ValueError, KeyError, IndexError):
        return False


def with_templates(base: Templates, extra: Sequence[str]) -> Templates:
    """`base` with the user's templates (`--template`) in place of its list for each language they are written in
    (a template holding a CJK ideograph is Chinese); a language with no template of the user's keeps `base`'s."""
    given: dict[str, list[str]] = {}
    for t in extra:
        if not is_template(t):
            raise UserError(f"--template {t!r}: a template holds exactly one {{}} where the label goes and no other "
                            "braces, e.g. 'a photo of a {}.' or '{}的照片'")
        given.setdefault(caption_lang(t.replace("{}", "")), []).append(t)
    return {lang: given.get(lang) or list(base[lang]) for lang in LANGS}


def caption(name: str, lang: str, rng: random.Random | None = None) -> str:
    template = rng.choice(TEMPLATES[lang]) if rng else EVAL_TEMPLATE[lang]
    return template.format(name)


def eval_prompts(names: list[str], lang: str) -> list[str]:
    return [EVAL_TEMPLATE[lang].format(n) for n in names]


# CJK ideographs of every block: the basic block, extension A, the supplementary planes' extensions B to G (with
# the compatibility supplement) and the compatibility ideographs. The Android app's ZeroShot.language uses the same.
_CJK = re.compile("[\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0003134f\uf900-\ufaff]")


def caption_lang(text: str) -> str:
    """The language of an untagged caption or label: zh if it holds a CJK ideograph (`_CJK`), else en."""
    return "zh" if _CJK.search(text) else "en"
