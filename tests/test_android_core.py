"""The Android demo's pure-Java core (android_demo/core) against Python, on this JVM, through JUnit.

Python writes the golden files (HF tokenizers ids, a tiny bundle with parity/ from the eager towers, latency
summaries); `make -C android_demo junit` compiles the core and its JUnit tests with javac and runs them once; every
JUnit test is then reported as its own pytest item, so the JUnit count shows in pytest's summary.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compress.tokenizer import BilingualTokenizer, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "android_demo"
TEST_SRC = DEMO / "core/src/test/java/org/dcclip/core"
CONTEXT = 16


def java_tests() -> list[str]:
    """Class.method of every @Test in the JUnit sources (read at collection time, so pytest can parametrize)."""
    names = []
    for src in sorted(TEST_SRC.glob("*Test.java")):
        names += [f"{src.stem}.{m}" for m in re.findall(r"@Test\s+public\s+void\s+(\w+)\s*\(", src.read_text(encoding="utf-8"))]
    return names


# ------------------------------------------------------------------------------------------------- hard strings
_PIECES = [
    "dog", "Dog", "DOG", "狗", "狗脸", "红苹果", "笑脸", "表情符号", "一张", "的", "café", "naïve", "Ångström", "Å", "ß", "ﬁ",
    "İstanbul", "ΣΟΦΙΑ", "σοφία", "Привет", "мир", "한국어", "日本語", "カタカナ", "ひらがな", "مرحبا", "नमस्ते", "ไทย",
    "ｆｕｌｌ", "ＡＢＣ", "１２３", "，", "。", "！", "？", "「", "」", "（", "）", "、", "：", "；", "—", "–", "…", "“", "”", "‘", "’",
    "😀", "🐶", "👍🏽", "👨‍👩‍👧", "🇨🇳", "🇺🇸", "1️⃣", "❤️", "🫠", "🥰", "☃", "★", "♥", "©", "®", "™", "°", "€", "¥", "$",
    "0", "7", "42", "3.14", "2024", "1,000", "½", "²", "①", "Ⅻ", "٣", "०", "!", "?", ".", ",", "-", "_", "'", '"', "#",
    "@", "&", "*", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "|", "~", "^", "`", "%", "+", "=", ":", ";",
    "e\u0301", "n\u0303", "a\u0308\u0301", "\u0301", "\u200b", "\u200d", "\ufeff", "\u00ad", "\u2060", "\u00a0", "\u3000",
    "\t", "\n", "\r", "\x00", "\x07", "\x7f", "\x85", "\ufffd", "\ue000", "\U000f0000", "\u0378", "\U0001fae8",
    "[UNK]", "[PAD]", "##ing", "un##known", "emoji", "an emoji of", "a picture of",
]


def hard_strings(n: int = 260, seed: int = 0) -> list[str]:
    """Mixed scripts, full-width forms, accents and combining marks, emoji sequences, digits, punctuation, controls,
    over-long words and texts, empty and blank: hand-picked ones, then seeded random mixes of the pieces above."""
    fixed = [
        "", " ", "   ", "\t\n", "\u3000", "\u200b", "Hello, World!", "hello world", "HELLO WORLD",
        "Dog Face 狗脸", "dog🐶face", "狗🐶脸", "ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３", "ÉCOLE café naïve résumé", "ΣΑΣ σας",
        "İ ı I i", "straße STRASSE", "ﬁnance ﬂow", "a" * 99, "a" * 100, "a" * 101, "狗" * 120, "dog " * 50,
        "x" * 300 + " dog", "pneumonoultramicroscopicsilicovolcanoconiosis", "e-mail co-op rock'n'roll don't",
        "100% ($5.00) #1 @home a+b=c", "北京2024年奥运会", "2024年10月1日", "第1名!", "ＵＳＡ🇺🇸ＵＫ", "😀😃😄😁", "👨‍👩‍👧‍👦 family",
        "1️⃣2️⃣3️⃣", "❤️‍🔥", "🏳️‍🌈 flag", "smile😊", "😊smile", "中文English混合Mixed", "日本語とEnglish", "한국어 Korean 韓國",
        "Привет мир", "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Ελληνικά", "tab\tsep", "new\nline", "cr\rlf\r\n",
        "nul\x00byte", "bell\x07", "soft\u00adhyphen", "zero\u200dwidth\u200cjoiner", "bom\ufeffmark", "nbsp\u00a0space",
        "e\u0301e\u0301", "\u0301\u0301\u0301", "a\u0308\u0304", "ǅungla", "Ⅻ ⅻ", "①②③", "x²+y²", "½ ¼ ¾", "٣٤٥ ०१२",
        "“quoted” ‘single’", "「括号」（括号）", "……——", "...---___", "~!@#$%^&*()_+`-=[]{}|;':\",./<>?\\",
        "[UNK] [PAD] ##", "an emoji of red apple", "一张汽车的图片", "a picture of 猫", "\ue000private", "\U0010fffd",
        "\u0378unassigned", "\U0001fae8 shaking face", "🫠 melting", "\ufffdreplacement", "k\u212a kelvin", "Ω\u2126 ohm",
        "\ufb01\ufb02", "\u1e9e capital sharp s", "\u0130\u0307", "\u03a3\u0301", "\uac00\ub098\ub2e4", "\u1100\u1161",
    ]
    rng = random.Random(seed)
    out = list(fixed)
    while len(out) < n:
        k = rng.randint(1, 8)
        seps = ["", " ", " ", "  ", "\t", "-", "\u3000"]
        out.append("".join(rng.choice(_PIECES) + rng.choice(seps) for _ in range(k)))
    return out


# ------------------------------------------------------------------------------------------------- golden files
@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer

    from compress.data.emoji import emoji_classes
    from compress.model import DualEncoder, DualEncoderSpec
    from compress.prompts import TEMPLATES
    from mobile_export.bundle.parity import build_parity
    from mobile_export.bundle.write import write_bundle
    from mobile_export.timing import summarize_latencies

    root = tmp_path_factory.mktemp("android-golden")
    classes = emoji_classes()
    texts = {lang: [t.format(getattr(c, lang)) for c in classes for t in TEMPLATES[lang]] for lang in ("en", "zh")}
    tok = BilingualTokenizer(train_tokenizer(texts["en"] + texts["zh"], 4096), CONTEXT)
    tok.save(root / "tokenizer.json")
    hf = Tokenizer.from_file(str(root / "tokenizer.json"))

    padded = Tokenizer.from_file(str(root / "tokenizer.json"))
    padded.enable_truncation(20, direction="left")
    padded.enable_padding(length=24, pad_id=1, pad_token="[UNK]", direction="left")
    padded.save(str(root / "tokenizer_padded.json"))

    hard = hard_strings()
    groups = {"emoji_en": texts["en"], "emoji_zh": texts["zh"], "hard": hard}
    tokens = {"context_length": CONTEXT, "pad_id": tok.pad_id}
    for name, strings in groups.items():
        tokens[name] = {"strings": strings, "ids": [e.ids for e in hf.encode_batch(strings)],
                        "fixed": tok(strings).tolist()}
    tokens["padded"] = {"strings": hard, "ids": [e.ids for e in padded.encode_batch(hard)]}
    (root / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")

    # A bundle of a tiny random student; parity from its eager towers (the .pte path is the same code with PteModule).
    torch.manual_seed(0)
    model = DualEncoder(DualEncoderSpec("vit_pico_p8", "text_pico", 32, 32, CONTEXT, tok.vocab_size)).eval()
    bundle = root / "bundle"
    bundle.mkdir()
    write_bundle(bundle, model, tok, "xnnpack", {"fp32": {"image": "image_fp32.pte", "text": "text_fp32.pte"}})
    build_parity(bundle, model.image, model.text, label_limit=128, quant="fp32")
    # The export's own preprocess.json and labels.json layout (mobile_export/bundle/write.py), with parity's label rows.
    from mobile_export.bundle.write import preprocess_spec

    (bundle / "preprocess.json").write_text(json.dumps(preprocess_spec(model, tok)))
    parity = json.loads((bundle / "parity/parity.json").read_text(encoding="utf-8"))
    langs = list(parity["langs"])
    rows = b"".join((bundle / "parity" / parity["langs"][lang]["file"]).read_bytes() for lang in langs)
    (bundle / "label_embeddings_fp32.f32").write_bytes(rows)
    n = len(parity["langs"]["en"]["names"])
    (bundle / "labels.json").write_text(json.dumps({
        "languages": langs, "labels": [{lang: parity["langs"][lang]["names"][i] for lang in langs} for i in range(n)],
        "embeddings": {"fp32": {"file": "label_embeddings_fp32.f32", "shape": [len(langs), n, 32]}},
    }, ensure_ascii=False), encoding="utf-8")

    # Labels typed on the phone (TypedLabelsTest): the bundle gets a template ensemble per language, and Python embeds
    # typed labels as mobile_export/bundle/labels.py embed_rows does: each template's embedding normalised, their mean
    # normalised; the language is the label's (compress.prompts.caption_lang).
    from compress.prompts import caption_lang

    meta = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    meta["templates"] = {lang: list(ts) for lang, ts in TEMPLATES.items()}
    (bundle / "bundle.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    typed = ["dog face", "狗脸", "red apple 红苹果", "grinning face😀", "Ω", "hot dog"]
    prompts, raws, rows = [], [], []
    with torch.no_grad():
        for label in typed:
            texts = [t.format(label) for t in TEMPLATES[caption_lang(label)]]
            ids = tok(texts)
            raw = model.text(ids).float()
            prompts += [{"text": t, "ids": r} for t, r in zip(texts, ids.tolist())]
            raws.append(raw)
            rows.append(torch.nn.functional.normalize(torch.nn.functional.normalize(raw, dim=-1).mean(0), dim=-1))
    (root / "typed_prompts.f32").write_bytes(torch.cat(raws).numpy().astype("<f4").tobytes())
    (root / "typed_labels.f32").write_bytes(torch.stack(rows).numpy().astype("<f4").tobytes())
    (root / "typed.json").write_text(json.dumps({
        "labels": typed, "prompts": prompts, "prompt_embeddings": "typed_prompts.f32", "label_embeddings": "typed_labels.f32",
        "label_prompts": {label: [t.format(label) for t in TEMPLATES[caption_lang(label)]] for label in typed},
    }, ensure_ascii=False), encoding="utf-8")

    latencies = [random.Random(1).uniform(1, 9) for _ in range(23)]
    (root / "latency.json").write_text(json.dumps(
        {"latencies": latencies, "load_ms": 12.5, "summary": summarize_latencies(latencies, 12.5)}))
    return root


@pytest.fixture(scope="module")
def junit(golden) -> dict[str, dict]:
    """Compile the core and the JUnit tests with javac and run them once; {Class.method: result}."""
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.fail("javac/java not found: `make install` installs the JDK and junit4 (apt) for these tests")
    results = golden / "junit.jsonl"
    proc = subprocess.run(
        ["make", "-s", "-C", str(DEMO), "junit", f"BUILD={golden / 'build'}", f"GOLDEN={golden}", f"RESULTS={results}"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and results.is_file(), proc.stdout + proc.stderr
    return {r["test"]: r for r in map(json.loads, results.read_text(encoding="utf-8").splitlines())}


@pytest.mark.parametrize("name", java_tests())
def test_junit(name, junit):
    assert name in junit, f"JUnit did not run {name}"
    r = junit[name]
    assert r["status"] == "passed", r["message"]


def test_every_junit_test_is_a_pytest_item(junit):
    assert set(junit) == set(java_tests())
    assert len(junit) >= 15


def test_hard_strings_cover_what_the_issue_lists():
    strings = hard_strings()
    assert len(strings) >= 200 and "" in strings
    assert any(len(s) > 300 for s in strings) and any("\uff21" in s for s in strings)  # over-long, full-width
    assert any("\u0301" in s for s in strings) and any("\U0001f600" in s for s in strings)  # accents, emoji


def test_java_bench_json_reads_with_the_adb_parser(junit, golden):
    from mobile_export.bench.adb import parse_minibench_results

    metrics = parse_minibench_results((golden / "java_bench.json").read_text(encoding="utf-8"))
    want = json.loads((golden / "latency.json").read_text())["summary"]
    assert set(metrics) == set(want)
    assert metrics["median_inference_latency(ms)"] == pytest.approx(want["median_inference_latency(ms)"])


def test_make_tokenize_prints_hf_ids_line_by_line(golden, tmp_path):
    from tokenizers import Tokenizer

    lines = [s for s in hard_strings() if "\n" not in s and "\r" not in s][:120] + ["Dog Face 狗脸", ""]
    path = golden / "tokenizer.json"
    proc = subprocess.run(
        ["make", "-s", "-C", str(DEMO), "tokenize", f"TOKENIZER={path}", f"BUILD={golden / 'build'}"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    hf = Tokenizer.from_file(str(path))
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [hf.encode(s).ids for s in lines]


def test_make_tokenize_without_a_tokenizer_is_one_line(golden):
    proc = subprocess.run(["make", "-s", "-C", str(DEMO), "tokenize", "TOKENIZER=/nonexistent/tokenizer.json",
                           f"BUILD={golden / 'build'}"], input="x\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "tokenizer file '/nonexistent/tokenizer.json' not found" in proc.stderr


def test_unicode_tables_match_the_installed_tokenizers():
    """The Java tokenizer's character tables were generated from this tokenizers version; a new one must regenerate."""
    proc = subprocess.run([sys.executable, str(DEMO / "tools/gen_unicode_tables.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
