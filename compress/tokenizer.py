"""The bilingual tokenizer: a standard BERT-style WordPiece, trained here and run by HF `tokenizers`.

Chinese is split into single characters (BertNormalizer's handle_chinese_chars) and English into lower-cased word
pieces. Both are plain, well-documented algorithms, so the phone can reproduce them from `tokenizer.json` alone.

The vocabulary is learnt by `wordpiece_vocab`, not by `tokenizers.trainers.WordPieceTrainer`: that trainer breaks ties
between equally frequent merges by Rust hash-map order, which changes from process to process
(huggingface/tokenizers#1794), so two runs of one recipe got different vocabularies and different numbers.
"""
from __future__ import annotations

import functools
import heapq
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from compress.atomic import atomic_path
from compress.errors import UserError, one_line

PAD, UNK = "[PAD]", "[UNK]"
SPECIAL_TOKENS = (PAD, UNK)  # ids 0 and 1
PREFIX = "##"  # marks a piece that continues a word
MAX_INPUT_CHARS_PER_WORD = 100
INVENTORIES = ("gb2312", "none")  # students.text.inventory
# The vocabulary is learnt from at most max(VOCAB_SAMPLE, SAMPLE_PER_PIECE x vocab_size) captions: WordPiece learning
# costs ~0.05 ms a caption in Python (32 s for a 300k-pair corpus, minutes for 2M, at every start), while a few
# captions per piece find the same frequent pieces, and the inventory covers the characters a sample misses.
VOCAB_SAMPLE = 20_000
SAMPLE_PER_PIECE = 5


def _normalizer() -> normalizers.Normalizer:
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True)


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """How often each pre-tokenised word occurs, seen through the very normalizer and pre-tokenizer encoding uses."""
    norm, pre = _normalizer(), pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text, n in Counter(texts).items():
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            counts[word] += n
    return counts


def wordpiece_vocab(counts: dict[str, int], vocab_size: int) -> list[str]:
    """WordPiece vocabulary learning as `tokenizers`' WordPieceTrainer does it, with a total, hash-free order.

    Each word starts as its characters, every one after the first prefixed with "##". The vocabulary starts as the
    special tokens, every character of the corpus (by code point), then every "##" character (by code point); it
    therefore holds every character even when that exceeds `vocab_size`. Then, until it has `vocab_size` tokens or
    no pair is left, the most frequent adjacent pair (count summed over word occurrences) is merged everywhere into
    left + right-without-"##", and the result appended unless already there. Ties go to the pair whose (left id,
    right id) is smallest, as in HF's trainer (where the ids of the "##" characters follow hash order, hence its
    nondeterminism): older, shorter pieces win over deep, word-specific ones (a lexicographic tie-break would instead turn every word starting with "a" into
    whole-word tokens before any "z" piece). Pair counts are updated incrementally from the words that hold the
    merged pair, so a 25k-caption corpus trains in well under a second.
    """
    items = sorted((w, n) for w, n in counts.items() if w and n > 0)
    firsts = {w[0] for w, _ in items}
    rests = {PREFIX + c for w, _ in items for c in w[1:]}
    vocab = [*SPECIAL_TOKENS, *sorted(firsts - set(SPECIAL_TOKENS)), *sorted(rests - set(SPECIAL_TOKENS))]
    ids = {t: i for i, t in enumerate(vocab)}
    words = [[ids[w[0]]] + [ids[PREFIX + c] for c in w[1:]] for w, _ in items]
    freq = [n for _, n in items]

    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}  # pair -> indices of the words that (may) hold it
    for i, w in enumerate(words):
        for pair in zip(w, w[1:]):
            pair_count[pair] = pair_count.get(pair, 0) + freq[i]
            where.setdefault(pair, set()).add(i)
    # Min-heap of (-count, left id, right id) with lazy deletion: every pair with a positive count has an entry whose
    # stored count is >= its true one (pushed on every increase), so the first popped entry still exact is the best.
    heap = [(-n, a, b) for (a, b), n in pair_count.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg, a, b = heapq.heappop(heap)
        pair = (a, b)
        true = pair_count.get(pair, 0)
        if true != -neg:
            if true > 0:
                heapq.heappush(heap, (-true, a, b))
            continue
        right = vocab[b]
        token = vocab[a] + (right[len(PREFIX):] if right.startswith(PREFIX) else right)
        new = ids.get(token)
        if new is None:
            new = ids[token] = len(vocab)
            vocab.append(token)
        changed: dict[tuple[int, int], int] = {}
        for i in sorted(where.pop(pair, ())):
            w, n = words[i], freq[i]
            merged, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    merged.append(new)
                    j += 2
                else:
                    merged.append(w[j])
                    j += 1
            if len(merged) == len(w):
                continue
            for p in zip(w, w[1:]):
                changed[p] = changed.get(p, 0) - n
            for p in zip(merged, merged[1:]):
                changed[p] = changed.get(p, 0) + n
                where.setdefault(p, set()).add(i)
            words[i] = merged
        for p, delta in changed.items():
            count = pair_count.get(p, 0) + delta
            if count > 0:
                pair_count[p] = count
                if delta > 0:
                    heapq.heappush(heap, (-count, *p))
            else:
                pair_count.pop(p, None)
        pair_count.pop(pair, None)
    return vocab


def gb2312_chars() -> list[str]:
    """Every character of GB2312 (levels 1 and 2: 6,763 hanzi; plus its 682 symbols, kana, Greek, Cyrillic,
    full-width forms), from Python's own `gb2312` codec: no file, no download."""
    chars = []
    for row in range(1, 88):
        for col in range(1, 95):
            try:
                chars.append(bytes([0xA0 + row, 0xA0 + col]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return chars


@functools.cache
def inventory_tokens(name: str) -> tuple[str, ...]:
    """The generic character inventory every vocabulary holds besides its corpus (issue 17), as the tokenizer will
    see it: each character put through the normalizer (lower-cased, accents stripped) and the pre-tokenizer. A
    character that can continue a word (a letter, a digit) also comes as its "##" piece; a Chinese character or
    punctuation is always a word of its own. Printable ASCII is part of every inventory but "none"."""
    if name == "none":
        return ()
    if name != "gb2312":
        raise UserError(f"unknown character inventory {name!r}; use one of {', '.join(INVENTORIES)}")
    norm, pre = _normalizer(), pre_tokenizers.BertPreTokenizer()
    tokens: set[str] = set()
    for ch in [chr(c) for c in range(0x21, 0x7F)] + gb2312_chars():
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(ch)):
            for c in word:
                tokens.add(c)
                if len(pre.pre_tokenize_str(norm.normalize_str("a" + c))) == 1:  # joins a word: it can be a continuation piece
                    tokens.add(PREFIX + c)
    return tuple(sorted(tokens))


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, inventory: str = "none") -> Tokenizer:
    """A WordPiece tokenizer whose vocabulary depends only on `texts`, `vocab_size` and `inventory`: the learnt
    `wordpiece_vocab` (ids 0 .. <= vocab_size - 1, as without an inventory), then the inventory's tokens it lacks,
    by code point. `vocab_size` counts the learnt part only, so an inventory never crowds out corpus pieces."""
    vocab = wordpiece_vocab(word_counts(texts), vocab_size)
    have = set(vocab)
    vocab += [t for t in inventory_tokens(inventory) if t not in have]
    model = models.WordPiece(
        vocab={t: i for i, t in enumerate(vocab)}, unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD
    )
    tok = Tokenizer(model)
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=PREFIX)
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

    def window(self, texts: Sequence[str | None]) -> list[str | None]:
        """Each text cut to what this tokenizer keeps of it (the characters its first `context_length` tokens
        cover); a text that fits comes back unchanged. A teacher that reads the caption must read this much, no
        more: its target then describes the text the student saw (issue 17)."""
        return self.encode_with_window(texts)[1]

    def encode_with_window(self, texts: Sequence[str | None]) -> tuple[torch.Tensor, list[str | None]]:
        """(ids as `__call__` gives them, with None encoded as ""; `window(texts)`), from one encoding pass."""
        encs = self.tokenizer.encode_batch([t or "" for t in texts])
        ids = torch.tensor([e.ids for e in encs], dtype=torch.long)
        return ids, [None if t is None else self._cut(t, e) for t, e in zip(texts, encs)]

    @staticmethod
    def _cut(text: str, enc) -> str:
        if not enc.overflowing:
            return text
        ends = [end for (start, end), special in zip(enc.offsets, enc.special_tokens_mask) if not special and end > start]
        return text[: max(ends)] if ends else ""

    def unknown_spans(self, text: str) -> list[str]:
        """The parts of `text` this vocabulary spells as [UNK] (a character, or the word around it), in order, each
        once: what a user's label loses silently."""
        unk = self.tokenizer.token_to_id(UNK)
        enc = self.tokenizer.encode(text)
        spans = [text[start:end] for i, (start, end) in zip(enc.ids, enc.offsets) if i == unk and end > start]
        return list(dict.fromkeys(spans))

    def unknown_rate(self, texts: Sequence[str]) -> dict:
        """How much of `texts` this vocabulary cannot spell: the share of texts holding an [UNK], and of their
        characters that fall in an [UNK] (a held-out label set's coverage, reported per run)."""
        unk = self.tokenizer.token_to_id(UNK)
        with_unk = chars = unk_chars = 0
        for enc, text in zip(self.tokenizer.encode_batch(list(texts)), texts):
            spans = [end - start for i, (start, end) in zip(enc.ids, enc.offsets) if i == unk]
            with_unk += bool(spans)
            unk_chars += sum(spans)
            chars += sum(not c.isspace() for c in text)
        n = max(len(texts), 1)
        return {"texts": len(texts), "texts_with_unk": with_unk, "text_unk_rate": round(with_unk / n, 4),
                "char_unk_rate": round(unk_chars / max(chars, 1), 4)}

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            self.tokenizer.no_padding()
            self.tokenizer.no_truncation()
            self.tokenizer.save(str(tmp))
            self.tokenizer.enable_truncation(self.context_length)
            self.tokenizer.enable_padding(length=self.context_length, pad_id=self.pad_id, pad_token=PAD)

    @classmethod
    def load(cls, path: str | Path, context_length: int) -> "BilingualTokenizer":
        from compress.readers import read_text

        if not Path(path).is_file():
            raise UserError(f"tokenizer file {str(path)!r} not found; point to the run folder that holds tokenizer.json")
        text = read_text(path, "tokenizer file", "restore it from the run or checkpoint it came with")
        try:
            tok = Tokenizer.from_str(text)
        except Exception as exn:  # noqa: BLE001 - the tokenizers library raises its own Exception for any bad file
            why = (one_line(exn) or type(exn).__name__)[:120]
            raise UserError(f"tokenizer file {str(path)!r} is damaged ({why}); restore it from the run or checkpoint "
                            "it came with") from None
        missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
        if missing:
            raise UserError(f"tokenizer file {str(path)!r} has no {missing[0]} token (damaged, or not one of ours); "
                            "restore it from the run or checkpoint it came with")
        return cls(tok, context_length)


def vocabulary_sample(texts: Sequence[str], vocab_size: int = 4096, limit: int | None = None) -> list[str]:
    """`texts` when there are at most `limit` (default max(VOCAB_SAMPLE, SAMPLE_PER_PIECE x vocab_size)), else `limit`
    of them evenly spaced: a pure function of the list, so the run, `cache-teacher` and a resumed run learn the same
    vocabulary, and start-up stays flat in the corpus size. The built-in emoji world (13k captions) is used whole."""
    limit = max(VOCAB_SAMPLE, SAMPLE_PER_PIECE * vocab_size) if limit is None else limit
    n = len(texts)
    return list(texts) if n <= limit else [texts[i * n // limit] for i in range(limit)]


def tokenizer_corpus(pairs) -> Sequence[str]:
    """Every caption training can produce from `pairs` (a PairSet), in both languages: what the WordPiece
    vocabulary is trained on."""
    from compress.prompts import LANGS, TEMPLATES

    from compress.data.texts import concat_texts

    parts: list[Sequence[str]] = []
    for lang in LANGS:
        if pairs.templated:
            names = [n for n in (pairs.en if lang == "en" else pairs.zh) if n is not None]
            parts.append([t.format(n) for n in names for t in TEMPLATES[lang]])
        else:
            parts.append(pairs.texts(lang))
    return concat_texts(parts)  # a list, or for a corpus one flat TextColumn (compress/data/texts.py)
