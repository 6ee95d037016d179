"""The bilingual tokenizer: a standard BERT-style WordPiece built with HF `tokenizers`.

Chinese is split into single characters (BertNormalizer's handle_chinese_chars) and English into lower-cased word
pieces. Both are plain, well-documented algorithms, so the phone can reproduce them from `tokenizer.json` alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from compress.atomic import atomic_path
from compress.errors import UserError

PAD, UNK = "[PAD]", "[UNK]"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK], min_frequency=1)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


class BilingualTokenizer:
    """Fixed-length encoding (pad/truncate to `context_length`), because the exported text encoder has a static shape."""

    def __init__(self, tokenizer: Tokenizer, context_length: int) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.pad_id = tokenizer.token_to_id(PAD)
        tokenizer.enable_truncation(context_length)
        tokenizer.enable_padding(length=context_length, pad_id=self.pad_id, pad_token=PAD)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([e.ids for e in self.tokenizer.encode_batch(list(texts))], dtype=torch.long)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            self.tokenizer.no_padding()
            self.tokenizer.no_truncation()
            self.tokenizer.save(str(tmp))
            self.tokenizer.enable_truncation(self.context_length)
            self.tokenizer.enable_padding(length=self.context_length, pad_id=self.pad_id, pad_token=PAD)

    @classmethod
    def load(cls, path: str | Path, context_length: int) -> "BilingualTokenizer":
        if not Path(path).is_file():
            raise UserError(f"tokenizer file {str(path)!r} not found; point to the run folder that holds tokenizer.json")
        return cls(Tokenizer.from_file(str(path)), context_length)
