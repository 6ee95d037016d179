"""Tiny, offline, real-class CLIP-family checkpoints for tests.

Each builder writes a folder laid out exactly like a hub download (config.json + weights, tokenizer files,
preprocessor_config.json), so `HFTeacher.from_pretrained(folder)` exercises the same code path as a user's
`hf download ... --local-dir DIR`. Tokenizers are trained on a few en+zh sentences with the `tokenizers` library
because there is no hub access in tests; the vocabularies are tiny, so are the models (a few hundred kB).

`REAL_CHECKPOINTS` lists the shapes of the real hub checkpoints and `make_tiny_like` builds a stand-in for one:
same model class, patch size, input size (so the same patch grid), depths, position tables, special-token ids,
tokenizer type, pooling and image processor settings; only the widths are divided by `WIDTH_DIVISOR`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AltCLIPConfig,
    AltCLIPModel,
    BertTokenizer,
    ChineseCLIPConfig,
    ChineseCLIPImageProcessor,
    ChineseCLIPModel,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTokenizer,
    XLMRobertaTokenizer,
)

CORPUS = [
    "a photo of a cat",
    "a photo of a dog sitting on the grass",
    "two people riding bicycles in the city at night",
    "a red car parked next to a tree",
    "an aerial view of a river and mountains",
    "一只猫的照片",
    "一只狗坐在草地上",
    "两个人晚上在城市里骑自行车",
    "一辆红色的汽车停在树旁边",
    "河流和山脉的鸟瞰图",
]

IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN = 32
LAYERS = 2
HEADS = 2
PROJ_DIM = 16
# Non-default normalisation for the CLIP fixture, so tests prove the teacher reads the folder's constants.
CLIP_MEAN = [0.5, 0.4, 0.3]
CLIP_STD = [0.2, 0.25, 0.3]
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def _vision(**extra: object) -> dict:
    return dict(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        **extra,
    )


def _text(vocab_size: int, **extra: object) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        **extra,
    )


def _save(model: torch.nn.Module, tokenizer: object, processor: object, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _xlmr_tokenizer() -> XLMRobertaTokenizer:
    """SentencePiece-style Unigram vocab, like BAAI/AltCLIP's XLM-R tokenizer (specials at ids 0-4, <unk> = 3)."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.train_from_iterator(
        CORPUS,
        trainers.UnigramTrainer(vocab_size=200, special_tokens=specials, unk_token="<unk>", shrinking_factor=0.9),
    )
    vocab = [(piece, float(score)) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
    assert [p for p, _ in vocab[:5]] == specials
    return XLMRobertaTokenizer(vocab=vocab, model_max_length=512)


def _bert_tokenizer() -> BertTokenizer:
    """WordPiece vocab, like Chinese-CLIP's BERT tokenizer (Chinese split per character)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    vocab = tok.get_vocab()
    assert all(vocab[s] == i for i, s in enumerate(specials))
    return BertTokenizer(vocab=vocab, model_max_length=512)


def _clip_tokenizer() -> CLIPTokenizer:
    """Byte-level BPE with `</w>` word ends, like openai/clip; specials last so the EOS pooling matches CLIP's."""
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=700, initial_alphabet=alphabet, end_of_word_suffix="</w>")
    )
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    for sym in sorted(alphabet) + [a + "</w>" for a in sorted(alphabet)]:  # every byte encodable anywhere
        vocab.setdefault(sym, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _clip_processor(mean: list[float], std: list[float]) -> CLIPImageProcessor:
    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=mean,
        image_std=std,
    )


def make_tiny_altclip(directory: str | Path) -> Path:
    """Tiny `AltCLIPModel` + XLM-R tokenizer + CLIP image processor in `directory`; returns the folder."""
    torch.manual_seed(0)
    tokenizer = _xlmr_tokenizer()
    config = AltCLIPConfig(
        text_config=_text(len(tokenizer), max_position_embeddings=66, pad_token_id=1, project_dim=24),
        vision_config=_vision(),
        projection_dim=PROJ_DIM,
    )
    return _save(AltCLIPModel(config), tokenizer, _clip_processor(OPENAI_MEAN, OPENAI_STD), Path(directory))


def make_tiny_chinese_clip(directory: str | Path) -> Path:
    """Tiny `ChineseCLIPModel` + BERT tokenizer + Chinese-CLIP image processor (plain resize, no crop)."""
    torch.manual_seed(0)
    tokenizer = _bert_tokenizer()
    config = ChineseCLIPConfig(
        text_config=_text(len(tokenizer), max_position_embeddings=64, pad_token_id=0),
        vision_config=_vision(),
        projection_dim=PROJ_DIM,
    )
    processor = ChineseCLIPImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
    )
    return _save(ChineseCLIPModel(config), tokenizer, processor, Path(directory))


def make_tiny_clip(directory: str | Path) -> Path:
    """Tiny `CLIPModel` + CLIP BPE tokenizer + CLIP image processor with non-default mean/std."""
    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    config = CLIPConfig(
        text_config=_text(
            len(tokenizer),
            max_position_embeddings=40,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=_vision(),
        projection_dim=PROJ_DIM,
    )
    return _save(CLIPModel(config), tokenizer, _clip_processor(CLIP_MEAN, CLIP_STD), Path(directory))


# ------------------------------------------------------------------------------------ real checkpoint shapes
WIDTH_DIVISOR = 64  # tiny stand-ins keep every depth and size, and divide every width by this


@dataclass(frozen=True)
class RealShape:
    """Key config values of a real hub checkpoint (config.json + preprocessor_config.json)."""

    hub_id: str
    family: str  # model_type: altclip | chinese_clip | clip
    vision_width: int
    vision_layers: int
    patch: int
    image_size: int  # vision_config.image_size = processor input size
    text_width: int
    text_layers: int
    text_positions: int  # text_config.max_position_embeddings
    projection_dim: int
    project_dim: int | None = None  # AltCLIP only: XLM-R CLS -> transformation output width
    verified: bool = True  # False: widths/depths from memory, not re-read from the hub config for this table

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def processor(self) -> str:
        """`clip`: shortest-edge resize + centre crop (CLIPImageProcessor); `chinese_clip`: plain {h, w} resize."""
        return "chinese_clip" if self.family == "chinese_clip" else "clip"

    @property
    def trained_text_len(self) -> int:
        return {"altclip": 77, "chinese_clip": 52, "clip": 77}[self.family]


# Processors: every one uses OpenAI CLIP mean/std and bicubic resampling; CLIP/AltCLIP resize the short edge to
# image_size and centre-crop image_size; Chinese-CLIP resizes straight to {height: image_size, width: image_size}
# with do_center_crop false.
REAL_CHECKPOINTS: dict[str, RealShape] = {
    s.hub_id: s
    for s in [
        # AltCLIP: OpenAI ViT-L/14 vision + XLM-R large text (vocab 250002, positions 514, pad 1)
        RealShape("BAAI/AltCLIP", "altclip", 1024, 24, 14, 224, 1024, 24, 514, 768, project_dim=768),
        RealShape("BAAI/AltCLIP-m9", "altclip", 1024, 24, 14, 224, 1024, 24, 514, 768, 768, verified=False),
        # m18's config has projection_dim 1024 (seen); its ViT-H/14 vision widths are from memory
        RealShape("BAAI/AltCLIP-m18", "altclip", 1280, 32, 14, 224, 1024, 24, 514, 1024, 1024, verified=False),
        # Chinese-CLIP: RoBERTa-wwm text (vocab 21128, positions 512, pad 0), CLS pooling
        RealShape("OFA-Sys/chinese-clip-vit-base-patch16", "chinese_clip", 768, 12, 16, 224, 768, 12, 512, 512),
        RealShape("OFA-Sys/chinese-clip-vit-large-patch14", "chinese_clip", 1024, 24, 14, 224, 768, 12, 512, 768),
        RealShape("OFA-Sys/chinese-clip-vit-large-patch14-336px", "chinese_clip", 1024, 24, 14, 336, 768, 12, 512, 768),
        RealShape("OFA-Sys/chinese-clip-vit-huge-patch14", "chinese_clip", 1280, 32, 14, 224, 1024, 24, 512, 1024),
        # OpenAI CLIP: causal BPE text (vocab 49408, positions 77, legacy eos_token_id 2 -> argmax pooling)
        RealShape("openai/clip-vit-base-patch32", "clip", 768, 12, 32, 224, 512, 12, 77, 512),
        RealShape("openai/clip-vit-base-patch16", "clip", 768, 12, 16, 224, 512, 12, 77, 512),
        RealShape("openai/clip-vit-large-patch14", "clip", 1024, 24, 14, 224, 768, 12, 77, 768),
        RealShape("openai/clip-vit-large-patch14-336", "clip", 1024, 24, 14, 336, 768, 12, 77, 768),
    ]
}


def tiny_width(width: int) -> int:
    return max(8, width // WIDTH_DIVISOR)


def make_tiny_like(directory: str | Path, shape: RealShape) -> Path:
    """A tiny checkpoint folder shaped like `shape`: real class, depths, patch, input size, positions, processor."""
    torch.manual_seed(0)
    vw, tw, proj = tiny_width(shape.vision_width), tiny_width(shape.text_width), tiny_width(shape.projection_dim)
    vision = dict(
        hidden_size=vw, intermediate_size=4 * vw, num_hidden_layers=shape.vision_layers, num_attention_heads=2,
        image_size=shape.image_size, patch_size=shape.patch,
    )
    text = dict(
        hidden_size=tw, intermediate_size=4 * tw, num_hidden_layers=shape.text_layers, num_attention_heads=2,
        max_position_embeddings=shape.text_positions,
    )
    size = shape.image_size
    if shape.family == "altclip":
        tokenizer = _xlmr_tokenizer()
        text.update(vocab_size=len(tokenizer), pad_token_id=1, bos_token_id=0, eos_token_id=2,
                    project_dim=tiny_width(shape.project_dim or shape.text_width))
        model = AltCLIPModel(AltCLIPConfig(text_config=text, vision_config=vision, projection_dim=proj))
    elif shape.family == "chinese_clip":
        tokenizer = _bert_tokenizer()
        text.update(vocab_size=len(tokenizer), pad_token_id=0)
        model = ChineseCLIPModel(ChineseCLIPConfig(text_config=text, vision_config=vision, projection_dim=proj))
    else:
        tokenizer = _clip_tokenizer()
        # openai/* configs keep the legacy eos_token_id 2: transformers then pools at argmax(input_ids), which is the
        # EOS token because CLIP's vocabulary puts it last (so does this tokenizer).
        text.update(vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=2, pad_token_id=1)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj))
    if shape.processor == "chinese_clip":
        processor = ChineseCLIPImageProcessor(
            size={"height": size, "width": size}, crop_size={"height": 224, "width": 224}, do_center_crop=False,
            image_mean=OPENAI_MEAN, image_std=OPENAI_STD, resample=3,
        )
    else:
        processor = CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_center_crop=True,
            image_mean=OPENAI_MEAN, image_std=OPENAI_STD, resample=3,
        )
    return _save(model, tokenizer, processor, Path(directory))
