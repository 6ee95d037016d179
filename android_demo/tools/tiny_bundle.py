"""A tiny export bundle for `make android` on a clean clone (no trained run yet): a random-weight student
(vit_pico_p8 at 32 px + text_pico) with a tokenizer trained on the emoji names, lowered to XNNPACK fp32 .pte files,
bundle.json + tokenizer.json, and parity/ (which also gives the app a label set). Random weights: the labels it shows
are meaningless, the pipeline (assets, tokenizer, preprocessing, ExecuTorch calls, timings) is the real one.
Usage: python android_demo/tools/tiny_bundle.py OUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch


def main(out: Path) -> Path:
    from compress.data.emoji import emoji_classes
    from compress.model import DualEncoder, DualEncoderSpec, example_inputs
    from compress.prompts import TEMPLATES
    from compress.tokenizer import BilingualTokenizer, train_tokenizer
    from mobile_export.bundle.parity import write_parity
    from mobile_export.bundle.write import pte_metadata, write_bundle
    from mobile_export.lower.capture import save_pte
    from mobile_export.lower.targets import lower_to_pte

    out.mkdir(parents=True, exist_ok=True)
    texts = [t.format(getattr(c, lang)) for c in emoji_classes() for lang in ("en", "zh") for t in TEMPLATES[lang]]
    tokenizer = BilingualTokenizer(train_tokenizer(texts, 4096), 16)
    torch.manual_seed(0)
    model = DualEncoder(DualEncoderSpec("vit_pico_p8", "text_pico", 32, 32, 16, tokenizer.vocab_size)).eval()
    ex_img, ex_txt = example_inputs(model, 1)
    metadata = pte_metadata(model, tokenizer)
    for name, module, ex in (("image", model.image, ex_img), ("text", model.text, ex_txt)):
        save_pte(lower_to_pte(module, ex, metadata=metadata), out / f"{name}_fp32.pte")
    write_bundle(out, model, tokenizer, "xnnpack", {"fp32": {"image": "image_fp32.pte", "text": "text_fp32.pte"}})
    write_parity(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python android_demo/tools/tiny_bundle.py OUT_DIR")
    print(main(Path(sys.argv[1])))
