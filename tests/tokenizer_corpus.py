"""A realistic tokenizer corpus without rendering anything: CLDR emoji names (en + zh) through the caption templates."""
import emoji

from compress.prompts import TEMPLATES


def emoji_corpus(n: int) -> list[str]:
    """The first `n` fully-qualified emoji (by string), every English then every Chinese caption."""
    fq = emoji.STATUS["fully_qualified"]
    texts: dict[str, list[str]] = {"en": [], "zh": []}
    for e in sorted(e for e, d in emoji.EMOJI_DATA.items() if d["status"] == fq)[:n]:
        for lang in texts:
            raw = emoji.demojize(e, language=lang)
            if raw != e:
                name = " ".join(raw.strip(":").replace("_", " ").split())
                texts[lang] += [t.format(name) for t in TEMPLATES[lang]]
    return texts["en"] + texts["zh"]
