import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from compress.tokenizer import PAD, UNK, BilingualTokenizer, train_tokenizer, word_counts, wordpiece_vocab
from tests.tokenizer_corpus import emoji_corpus

CORPUS = ["dog face", "an emoji of red apple", "狗脸", "红苹果的表情符号", "cat face", "猫脸"]


def test_chinese_is_split_into_characters_and_english_lowercased(tmp_path):
    tok = BilingualTokenizer(train_tokenizer(CORPUS, 200), 12)
    pieces = tok.tokenizer.encode("Dog Face 狗脸").tokens
    assert pieces[:4] == ["dog", "face", "狗", "脸"]
    ids = tok(["dog face", "狗脸"])
    assert ids.shape == (2, 12) and ids.dtype.is_floating_point is False
    assert (ids[:, 2:] == tok.pad_id).all()


def test_save_and_load_give_identical_ids(tmp_path):
    tok = BilingualTokenizer(train_tokenizer(CORPUS, 200), 8)
    tok.save(tmp_path / "tokenizer.json")
    again = BilingualTokenizer.load(tmp_path / "tokenizer.json", 8)
    texts = ["red apple 红苹果", "unknown 鲸", "a very long caption that is longer than eight tokens for sure"]
    assert (tok(texts) == again(texts)).all()
    assert again(texts).shape == (3, 8)


# --------------------------------------------------------------------------------------- deterministic vocabulary

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus():
    texts = emoji_corpus(400)
    assert len(texts) > 3000
    return texts


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "")


def test_vocab_is_byte_identical_across_processes(tmp_path):
    script = (
        "import sys\nfrom compress.tokenizer import BilingualTokenizer, train_tokenizer\n"
        "from tests.tokenizer_corpus import emoji_corpus\n"
        "BilingualTokenizer(train_tokenizer(emoji_corpus(400), 1200), 16).save(sys.argv[1])\n"
    )
    procs = []
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = tmp_path / f"tokenizer_{seed}.json"
        procs.append((out, subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=REPO, env=env)))
    for out, p in procs:
        assert p.wait(timeout=120) == 0
    first, *rest = [out.read_bytes() for out, _ in procs]
    assert all(r == first for r in rest)
    assert Tokenizer.from_file(str(procs[0][0])).get_vocab_size() == 1200


def test_vocab_does_not_depend_on_input_order(corpus):
    counts = word_counts(corpus)
    shuffled = dict(sorted(counts.items(), key=lambda kv: (hash(kv[0]) % 97, kv[0]), reverse=True))
    assert wordpiece_vocab(counts, 1200) == wordpiece_vocab(shuffled, 1200)
    assert train_tokenizer(corpus, 1200).to_str() == train_tokenizer(corpus[::-1], 1200).to_str()


def test_trained_tokenizer_on_a_real_corpus(tmp_path, corpus):
    tok = BilingualTokenizer(train_tokenizer(corpus, 1200), 24)
    vocab = tok.tokenizer.get_vocab()
    assert tok.vocab_size == len(vocab) == 1200
    assert vocab[PAD] == 0 == tok.pad_id and vocab[UNK] == 1
    # every character of the corpus is a token: as it occurs first in a word, and as "##" + it after that
    words = word_counts(corpus)
    assert {w[0] for w in words} | {"##" + c for w in words for c in w[1:]} <= set(vocab)
    # Chinese stays single characters: no merged token holds a CJK ideograph
    assert {t for t in vocab if any(_is_cjk(c) for c in t) and len(t) > 1} == set()
    zh = [t for t in corpus if any(_is_cjk(c) for c in t)]
    assert all(len(p) == 1 for t in zh for p in tok.tokenizer.encode(t).tokens if any(_is_cjk(c) for c in p))
    # English becomes word pieces: frequent words whole, rare ones split into ##-pieces
    pieces = [p for p in tok.tokenizer.encode("An emoji of grinning face").tokens if p != PAD]
    assert pieces[:3] == ["an", "emoji", "of"] and pieces[-1] == "face"
    assert len(pieces) > 5 and all(p.startswith("##") for p in pieces[4:-1])  # grinning: a few pieces
    assert "".join(p.removeprefix("##") for p in pieces[3:-1]) == "grinning"
    # the saved file is a plain HF WordPiece tokenizer (no padding) that gives the very same ids
    tok.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert type(loaded.model).__name__ == "WordPiece" and loaded.padding is None
    in_memory = [[i for i in e.ids if i != tok.pad_id] for e in tok.tokenizer.encode_batch(corpus)]
    assert [e.ids for e in loaded.encode_batch(corpus)] == in_memory
    assert (BilingualTokenizer.load(tmp_path / "tokenizer.json", 24)(corpus) == tok(corpus)).all()
    # no [UNK] anywhere in the training corpus
    assert all(UNK not in e.tokens for e in loaded.encode_batch(corpus))
    assert loaded.decode(loaded.encode("an emoji of grinning face").ids) == "an emoji of grinning face"


def _naive_wordpiece_vocab(counts, vocab_size):
    """The same algorithm with a full pair recount per merge: the reference for the incremental update."""
    items = sorted(counts.items())
    firsts = sorted({w[0] for w, _ in items})
    rests = sorted({"##" + c for w, _ in items for c in w[1:]})
    vocab = [PAD, UNK, *firsts, *rests]
    ids = {t: i for i, t in enumerate(vocab)}
    words = [[ids[w[0]]] + [ids["##" + c] for c in w[1:]] for w, _ in items]
    while len(vocab) < vocab_size:
        pairs = {}
        for w, (_, n) in zip(words, items):
            for p in zip(w, w[1:]):
                pairs[p] = pairs.get(p, 0) + n
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], p))
        token = vocab[a] + vocab[b].removeprefix("##")
        if token not in ids:
            ids[token] = len(vocab)
            vocab.append(token)
        for k, w in enumerate(words):
            merged, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == (a, b):
                    merged.append(ids[token])
                    j += 2
                else:
                    merged.append(w[j])
                    j += 1
            words[k] = merged
    return vocab


def test_incremental_merges_match_a_full_recount():
    counts = word_counts(emoji_corpus(120) + ["aaaa aaaaaa banana bananas", "xyzzy"])
    full = _naive_wordpiece_vocab(counts, 10**6)  # runs until every word is one token
    assert wordpiece_vocab(counts, 10**6) == full
    assert wordpiece_vocab(counts, 400) == full[:400]


def test_small_vocab_keeps_every_character_and_ties_break_by_age():
    # "ab" and "cd" are equally frequent: the pair of older (smaller-id) tokens wins.
    vocab = wordpiece_vocab({"cd": 3, "ab": 3, "x": 1}, 9)
    assert vocab == [PAD, UNK, "a", "c", "x", "##b", "##d", "ab", "cd"]
    assert wordpiece_vocab({"cd": 3, "ab": 3}, 7) == [PAD, UNK, "a", "c", "##b", "##d", "ab"]
    assert wordpiece_vocab({"cd": 3, "ab": 3}, 2) == [PAD, UNK, "a", "c", "##b", "##d"]  # characters are never dropped


def test_the_vocabulary_holds_the_gb2312_inventory_on_top_of_the_learnt_pieces():
    """issue 17: every GB2312 level 1 and 2 character (6,763) is spelt, never [UNK], whatever the captions held; the
    learnt part of the vocabulary (ids and order) is the one the corpus alone gives."""
    from compress.tokenizer import gb2312_chars, inventory_tokens

    hanzi = [c for c in gb2312_chars() if "\u4e00" <= c <= "\u9fff"]
    assert len(hanzi) == 6763
    plain = train_tokenizer(CORPUS, 200)
    tok = BilingualTokenizer(train_tokenizer(CORPUS, 200, "gb2312"), 8)
    learnt = [t for t, _ in sorted(plain.get_vocab().items(), key=lambda kv: kv[1])]
    vocab = [t for t, _ in sorted(tok.tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    assert vocab[: len(learnt)] == learnt and set(inventory_tokens("gb2312")) <= set(vocab)
    ids = tok(hanzi)
    assert not (ids == tok.tokenizer.token_to_id(UNK)).any()
    assert tok.unknown_rate(["Zebra Crossing 斑马线 ÉLAN"])["char_unk_rate"] == 0.0  # ASCII, any case, accents stripped
    assert BilingualTokenizer(plain, 8).unknown_rate(["斑马线"])["texts_with_unk"] == 1  # without it: [UNK]


def test_held_out_label_sets_have_no_unk_for_characters_in_the_inventory():
    """issue 17: ELEVATER's zh class names (compress/eval_data/) are [UNK]-free wherever their characters are in the
    inventory; the few that hold a character outside GB2312 are [UNK] there only."""
    from compress.eval.elevater import elevater_datasets
    from compress.tokenizer import inventory_tokens

    inv = set(inventory_tokens("gb2312"))
    tok = BilingualTokenizer(train_tokenizer(CORPUS, 200, "gb2312"), 64)
    norm = tok.tokenizer.normalizer
    names = sorted({n for ds in elevater_datasets().values() for n in ds.classes["zh"]})
    inside = [n for n in names if all(c.isspace() or c in inv for c in norm.normalize_str(n))]
    assert len(inside) > 0.95 * len(names)
    assert tok.unknown_rate(inside)["texts_with_unk"] == 0
    outside = sorted(set(names) - set(inside))
    assert tok.unknown_rate(outside)["texts_with_unk"] == len(outside)


def test_the_vocabulary_learns_from_an_even_sample_of_a_large_corpus():
    """issue 17: past max(VOCAB_SAMPLE, 5 x vocab_size) captions the vocabulary is learnt from an even sample (start-up
    flat in corpus size), the same sample every time; a corpus under the limit is used whole."""
    from compress.tokenizer import VOCAB_SAMPLE, vocabulary_sample

    texts = [f"caption {i}" for i in range(1000)]
    assert vocabulary_sample(texts, limit=2000) == texts
    sample = vocabulary_sample(texts, limit=100)
    assert len(sample) == 100 and sample == vocabulary_sample(list(texts), limit=100)
    big = [f"c{i}" for i in range(VOCAB_SAMPLE * 3)]
    assert len(vocabulary_sample(big, 1000)) == VOCAB_SAMPLE and len(vocabulary_sample(big, 8000)) == 40_000
    assert sample[0] == texts[0] and sample[-1] == texts[990] and len(set(sample)) == 100
