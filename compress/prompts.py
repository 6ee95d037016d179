"""Caption templates per language. Training samples a template; zero-shot eval uses `EVAL_TEMPLATE`."""
from __future__ import annotations

import random

TEMPLATES: dict[str, list[str]] = {
    "en": ["{}", "an emoji of {}", "a {} emoji", "an icon of {}", "a picture of {}"],
    "zh": ["{}", "{}的表情符号", "一个{}表情", "{}的图标", "一张{}的图片"],
}
EVAL_TEMPLATE = {"en": "an emoji of {}", "zh": "{}的表情符号"}
LANGS = ("en", "zh")


def caption(name: str, lang: str, rng: random.Random | None = None) -> str:
    template = rng.choice(TEMPLATES[lang]) if rng else EVAL_TEMPLATE[lang]
    return template.format(name)


def eval_prompts(names: list[str], lang: str) -> list[str]:
    return [EVAL_TEMPLATE[lang].format(n) for n in names]


def caption_lang(text: str) -> str:
    """The language of an untagged caption: zh if it holds a CJK ideograph (basic block or extension A), else en."""
    return "zh" if any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text) else "en"
