from compress.tokenizer import BilingualTokenizer, train_tokenizer

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
