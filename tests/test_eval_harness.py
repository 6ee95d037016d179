"""The eval harness on small generated datasets in every documented layout, checked against brute force.

The model here is a colour model: an image embeds as its mean colour (centred), and each class prompt embeds as
that class's palette colour. Images are solid PNGs, so which class each image is nearest to is known from its pixels
alone and the expected metric is computed without the harness (pure Python over the decoded pixels).
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from compress.cli import main
from compress.eval.elevater import elevater_datasets, evaluate_elevater, fill
from compress.eval.zero_shot import Encoders
from compress.eval.retrieval import evaluate_retrieval, load_manifest
from tests.test_metrics import ref_ap11, ref_auc, ref_mean_per_class, ref_recalls, ref_topk

SIZE = 24


def palette(n: int) -> list[tuple[int, int, int]]:
    """n RGB colours whose centred directions are distinct (a Fibonacci spiral on the sphere)."""
    out = []
    for i in range(n):
        z = 1 - 2 * (i + 0.5) / n
        r, phi = math.sqrt(1 - z * z), i * math.pi * (3 - math.sqrt(5))
        v = (r * math.cos(phi), r * math.sin(phi), z)
        out.append(tuple(int(round(127.5 + 110 * c)) for c in v))
    return out


def centred(rgb) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float64) / 255 - 0.5


def colour_encoders(prompt_to_colour: dict[str, tuple]) -> Encoders:
    def image(x: torch.Tensor) -> torch.Tensor:
        return x.double().mean(dim=(2, 3)) - 0.5

    def text(prompts) -> torch.Tensor:
        return torch.stack([centred(prompt_to_colour[p]) for p in prompts])

    return Encoders("colour", image, text, params=3, image_size=SIZE)


def prompts_for(keys) -> dict[str, tuple]:
    table = {}
    for key in keys:
        ds = elevater_datasets()[key]
        cols = palette(ds.num_classes)
        for lang in ("en", "zh"):
            for i, name in enumerate(ds.classes[lang]):
                for t in ds.templates[lang]:
                    table[fill(t, name)] = cols[i]
    return table


def save_png(path: Path, rgb, size=(31, 17)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def cosines_from_pixels(paths, cols) -> list[list[float]]:
    """The reference: decode each image, take its mean colour, cosine to every class colour (Python floats)."""
    rows = []
    for p in paths:
        mean = np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).mean(axis=(0, 1)) / 255 - 0.5
        row = []
        for c in cols:
            cc = [v / 255 - 0.5 for v in c]
            row.append(float(np.dot(mean, cc) / (np.linalg.norm(mean) * np.linalg.norm(cc))))
        rows.append(row)
    return rows


def softmax100(row):
    m = max(row)
    e = [math.exp(100 * (v - m)) for v in row]
    return [v / sum(e) for v in e]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """cifar-10 as ImageFolder (index and name folders), pets as imbalanced test.jsonl, VOC multi-label jsonl,
    hateful memes as jsonl, rendered-sst2 in torchvision's own layout. Some images wear another class's colour."""
    root = tmp_path_factory.mktemp("elevater")
    t = elevater_datasets()
    expected = {}

    cifar = t["cifar-10"]
    cols = palette(cifar.num_classes)
    paths, labels = [], []
    for i in range(cifar.num_classes):
        folder = root / "cifar-10/test" / (str(i) if i % 2 else cifar.classes["en"][i])
        for j in range(3):
            colour = cols[(i + 1) % 10] if (i, j) in {(2, 0), (5, 1), (9, 2)} else cols[i]
            save_png(folder / f"{j}.png", colour)
            paths.append(folder / f"{j}.png")
            labels.append(i)
    expected["cifar-10"] = (paths, labels, cols)

    pets = t["oxford-iiit-pets"]
    cols = palette(pets.num_classes)
    rows, paths, labels = [], [], []
    counts = {0: 9, 3: 2, 7: 1, 36: 4}
    for c, n in counts.items():
        for j in range(n):
            colour = cols[c] if j != 1 else cols[(c + 5) % pets.num_classes]  # the 2nd image of each class is wrong
            rel = f"img/{c}_{j}.png"
            save_png(root / "oxford-iiit-pets" / rel, colour)
            rows.append({"image": rel, "label": c})
            paths.append(root / "oxford-iiit-pets" / rel)
            labels.append(c)
    (root / "oxford-iiit-pets/test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    expected["oxford-iiit-pets"] = (paths, labels, cols)

    voc = t["voc-2007-classification"]
    cols = palette(voc.num_classes)
    rows, paths, hot = [], [], []
    for i in range(voc.num_classes * 2):
        labs = sorted({i % voc.num_classes, (i * 7 + 3) % voc.num_classes})
        colour = cols[labs[0]] if i % 3 else cols[(labs[-1] + 4) % voc.num_classes]
        rel = f"{i}.png"
        save_png(root / "voc-2007-classification" / rel, colour)
        rows.append({"image": rel, "labels": labs})
        paths.append(root / "voc-2007-classification" / rel)
        hot.append([c in labs for c in range(voc.num_classes)])
    (root / "voc-2007-classification/test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    expected["voc-2007-classification"] = (paths, hot, cols)

    hm = t["hateful-memes"]
    cols = palette(hm.num_classes)
    rows, paths, labels = [], [], []
    mixes = [(0, 0.0), (0, 0.3), (0, 0.6), (1, 0.2), (1, 0.7), (1, 1.0), (0, 0.9), (1, 0.5)]
    for i, (y, a) in enumerate(mixes):
        colour = tuple(int(round((1 - a) * p + a * q)) for p, q in zip(cols[0], cols[1]))
        save_png(root / "hateful-memes" / f"{i}.png", colour)
        rows.append({"image": f"{i}.png", "label": y})
        paths.append(root / "hateful-memes" / f"{i}.png")
        labels.append(y)
    (root / "hateful-memes/test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    expected["hateful-memes"] = (paths, labels, cols)

    sst = t["rendered-sst2"]
    cols = palette(sst.num_classes)
    paths, labels = [], []
    for i, name in enumerate(["negative", "positive"]):  # torchvision's folder names, in its class order
        for j in range(2 + i):
            p = root / "rendered-sst2/rendered-sst2/test" / name / f"{j}.png"
            save_png(p, cols[i] if j else cols[1 - i])
            paths.append(p)
            labels.append(i)
    expected["rendered-sst2"] = (sorted(paths), [0, 0, 1, 1, 1], cols)
    return root, expected


KEYS = ["cifar-10", "oxford-iiit-pets", "voc-2007-classification", "hateful-memes", "rendered-sst2"]


def test_every_layout_and_metric_equals_brute_force(data_root):
    root, expected = data_root
    results = {}
    for key in KEYS:  # one colour model per dataset: generic prompts such as 飞机的照片 recur across datasets
        r, skipped = evaluate_elevater(colour_encoders(prompts_for([key])), [elevater_datasets()[key]], root,
                                       ["en", "zh"], batch_size=4)
        assert not skipped
        results |= r
    _, skipped = evaluate_elevater(colour_encoders({}), [elevater_datasets()["mnist"]], root, ["en", "zh"])
    assert set(skipped) == {"mnist"} and "does not exist" in skipped["mnist"]
    assert results["cifar-10"]["layout"] == "image_folder" and results["oxford-iiit-pets"]["layout"] == "jsonl"
    assert results["rendered-sst2"]["layout"] == "torchvision.RenderedSST2"
    for key in KEYS:
        paths, labels, cols = expected[key]
        cos = cosines_from_pixels(paths, cols)
        metric = elevater_datasets()[key].metric
        if metric == "accuracy":
            want = ref_topk(cos, labels, 1)
        elif metric == "mean_per_class":
            want = ref_mean_per_class(cos, labels)
        elif metric == "roc_auc":
            want = ref_auc([softmax100(r)[1] for r in cos], [y == 1 for y in labels])
        else:
            probs = [softmax100(r) for r in cos]
            aps = [ref_ap11([p[c] for p in probs], [h[c] for h in labels]) for c in range(len(cols))]
            want = math.fsum(aps) / len(aps)
        for lang in ("en", "zh"):
            got = results[key][lang]["score"]
            if metric in ("accuracy", "mean_per_class"):
                assert got == want, (key, lang)  # counts: exact
            else:
                assert got == pytest.approx(want, abs=1e-9), (key, lang)  # softmax in float64 vs math.exp
        assert results[key]["n"] == len(paths)
    assert results["cifar-10"]["en"]["score"] == 27 / 30  # 3 images painted with the wrong class colour
    pets = results["oxford-iiit-pets"]["en"]
    assert pets["score"] == pytest.approx((8 / 9 + 1 / 2 + 1 / 1 + 3 / 4) / 4) and pets["top1"] == 13 / 16


def test_bad_layouts_fail_with_one_line(tmp_path):
    enc = colour_encoders({})
    ds = elevater_datasets()["cifar-10"]
    (tmp_path / "cifar-10/test/not-a-class").mkdir(parents=True)
    from compress.errors import UserError

    with pytest.raises(UserError, match="neither a class index"):
        evaluate_elevater(enc, [ds], tmp_path, ["en"])
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist/test.jsonl").write_text('{"image": "../../etc/passwd", "label": 1}\n')
    with pytest.raises(UserError, match="leaves"):
        evaluate_elevater(enc, [elevater_datasets()["mnist"]], tmp_path, ["en"])
    (tmp_path / "mnist/test.jsonl").write_text('{"image": "a.png", "label": 10}\n')
    with pytest.raises(UserError, match=r"outside 0..9"):
        evaluate_elevater(enc, [elevater_datasets()["mnist"]], tmp_path, ["en"])


def test_retrieval_manifest_equals_brute_force(tmp_path):
    cols = palette(6)
    rows, table = [], {}
    for i in range(6):
        # image 4 wears image 0's colour: a near-duplicate pair, so its captions tie between the two images.
        save_png(tmp_path / f"{i}.png", cols[0] if i == 4 else cols[i])
        en = [f"picture {i} a", f"picture {i} b"][: 1 + i % 2]
        zh = [f"图 {i}"] if i != 5 else None  # image 5 has no Chinese caption: gallery only for zh
        row = {"image": f"{i}.png", "en": en}
        if zh:
            row["zh"] = zh
        rows.append(row)
        for c in en + (zh or []):
            table[c] = cols[(i + 1) % 6] if c == "picture 3 a" else cols[i]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    rs = load_manifest(tmp_path / "m.jsonl", ["en", "zh"])
    got = evaluate_retrieval(colour_encoders(table), rs, ["en", "zh"], batch_size=4)
    for lang in ("en", "zh"):
        caps = [(c, i) for i, r in enumerate(rows) for c in (r.get(lang) or [])]
        img_cos = cosines_from_pixels([tmp_path / f"{i}.png" for i in range(6)], [table[c] for c, _ in caps])
        pos = [[owner == i for _, owner in caps] for i in range(6)]
        want = ref_recalls(img_cos, pos)
        assert got[lang]["captions"] == len(caps)
        for key, value in want.items():
            assert got[lang][key] == pytest.approx(value, abs=1e-12), (lang, key)
    assert got["en"]["i2t_R@1"] < 1.0 and got["zh"]["i2t_R@10"] == 1.0


def test_manifest_errors_name_the_line(tmp_path):
    from compress.errors import UserError

    (tmp_path / "m.jsonl").write_text('{"image": "x.png", "en": "a"}\n')
    with pytest.raises(UserError, match=r"m.jsonl:1: image 'x.png' is missing"):
        load_manifest(tmp_path / "m.jsonl", ["en"])
    save_png(tmp_path / "x.png", (1, 2, 3))
    (tmp_path / "m.jsonl").write_text('{"image": "x.png", "en": ""}\n')
    with pytest.raises(UserError, match="non-empty string"):
        load_manifest(tmp_path / "m.jsonl", ["en"])


def test_cli_eval_on_a_student_checkpoint_writes_the_report(tmp_path, data_root):
    """A real (untrained) student through `dcclip-compress eval`, ELEVATER datasets from the generated folders."""
    from compress.model import DualEncoder, DualEncoderSpec, save_checkpoint
    from compress.tokenizer import BilingualTokenizer, train_tokenizer

    root, _ = data_root
    tok = BilingualTokenizer(train_tokenizer(["a photo of a cat", "一张猫的照片", "dog 狗"], 200), 16)
    spec = DualEncoderSpec("vit_pico_p8", "text_pico", 16, 32, 16, tok.vocab_size)
    torch.manual_seed(0)
    save_checkpoint(DualEncoder(spec), tok, tmp_path / "ckpt")
    res = CliRunner().invoke(main, ["eval", f"student={tmp_path / 'ckpt'}", "--suite", "elevater", "--data-root",
                                    str(root), "--datasets", "cifar-10,mnist", "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "| dataset | metric | student en | student zh |" in res.output
    assert "| cifar-10 | top-1 |" in res.output and "skipped mnist:" in res.output
    out = json.loads((tmp_path / "rep/eval.json").read_text())
    r = out["results"]["elevater"]["student"]["cifar-10"]
    assert r["n"] == 30 and 0.0 <= r["en"]["score"] <= 1.0 and r["en"]["top1"] <= r["en"]["top5"]
    assert (tmp_path / "rep/eval.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "rep/eval.md").read_text(encoding="utf-8").startswith("# dcclip-compress eval")


@pytest.mark.parametrize("args, message", [
    (["--suite", "bogus"], "--suite: 'bogus' is not one of"),
    (["--suite", "elevater", "--datasets", "cifar10"], "did you mean 'cifar-10'"),
    (["--lang", "fr"], "--lang: 'fr' is not supported"),
    (["--suite", "retrieval", "--manifest", "nope.jsonl"], "--manifest: 'nope.jsonl' not found"),
])
def test_cli_eval_bad_input_is_one_line_exit_2(tmp_path, args, message):
    res = CliRunner().invoke(main, ["eval", "reference", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error:") and message in line and "Traceback" not in res.output


def test_chinese_clip_label_cn_replaces_the_bundled_translation(tmp_path):
    """Chinese-CLIP's archive layout as-is: test/<3-digit id>/ folders plus label_cn.txt with its Chinese names."""
    from compress.errors import UserError

    ds = elevater_datasets()["cifar-10"]
    cols = palette(10)
    published = [f"类别{i}" for i in range(10)]
    for i in range(10):
        save_png(tmp_path / f"cifar-10/test/{i:03d}/a.png", cols[i])
    (tmp_path / "cifar-10/label_cn.txt").write_text("\n".join(published) + "\n", encoding="utf-8")
    table = {fill(t, name): cols[i] for i, name in enumerate(published) for t in ds.templates["zh"]}
    table |= {fill(t, name): cols[i] for i, name in enumerate(ds.classes["en"]) for t in ds.templates["en"]}
    results, _ = evaluate_elevater(colour_encoders(table), [ds], tmp_path, ["en", "zh"])
    assert results["cifar-10"]["zh_classes"].startswith("label_cn.txt")
    assert results["cifar-10"]["zh"]["score"] == results["cifar-10"]["en"]["score"] == 1.0
    (tmp_path / "cifar-10/label_cn.txt").write_text("飞机\n汽车\n", encoding="utf-8")
    with pytest.raises(UserError, match="2 names for 10 classes"):
        evaluate_elevater(colour_encoders(table), [ds], tmp_path, ["zh"])


def test_torchvision_labels_are_mapped_by_name_then_by_map_never_guessed():
    from compress.data.labelled import torchvision_label_map

    ours = ["apple pie", "cheesecake", "cheese plate", "F-16A-B"]
    # by name: underscores, slashes and case folded; the cheesecake / cheese plate swap is undone
    assert torchvision_label_map(["apple_pie", "cheese_plate", "cheesecake", "F-16A/B"], ours, None, False) == [0, 2, 1, 3]
    # names that do not match: the shipped map, else identity only when the order is known to be the same
    assert torchvision_label_map(["x", "y", "z", "w"], ours, [3, 2, 1, 0], False) == [3, 2, 1, 0]
    assert torchvision_label_map(None, ours, None, True) == [0, 1, 2, 3]
    assert torchvision_label_map(["x", "y", "z", "w"], ours, None, False) is None
    assert torchvision_label_map(["x", "y", "z"], ours, None, True) is None  # class counts differ


def test_cli_eval_compares_an_hf_teacher_folder_with_a_student(tmp_path, data_root):
    """An HF Chinese-CLIP folder (loaded with from_pretrained) and a student in one table, with deltas."""
    from compress.model import DualEncoder, DualEncoderSpec, save_checkpoint
    from compress.tokenizer import BilingualTokenizer, train_tokenizer
    from tests import hf_fixtures as fx

    root, _ = data_root
    teacher = fx.make_tiny_chinese_clip(tmp_path / "cnclip")
    tok = BilingualTokenizer(train_tokenizer(["a photo of a cat", "一张猫的照片"], 200), 16)
    save_checkpoint(DualEncoder(DualEncoderSpec("vit_pico_p8", "text_pico", 16, 32, 16, tok.vocab_size)), tok,
                    tmp_path / "ckpt")
    res = CliRunner().invoke(main, ["eval", f"teacher={teacher}", f"student={tmp_path / 'ckpt'}", "--suite",
                                    "elevater", "--data-root", str(root), "--datasets", "rendered-sst2,hateful-memes",
                                    "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "rep/eval.json").read_text())
    assert [m["label"] for m in out["models"]] == ["teacher", "student"]
    assert out["models"][0]["params"] > 0
    for label in ("teacher", "student"):
        r = out["results"]["elevater"][label]
        assert 0.0 <= r["hateful-memes"]["zh"]["score"] <= 1.0 and r["rendered-sst2"]["layout"] == "torchvision.RenderedSST2"
    assert "| **mean of 2** |" in res.output and " (" in res.output.split("| rendered-sst2 |")[1].splitlines()[0]


def test_chinese_clip_retrieval_layout_equals_brute_force(tmp_path):
    """`test_texts.jsonl` + `test_imgs.tsv` as Chinese-CLIP ships Flickr30k-CN / COCO-CN; one caption names two images."""
    import base64
    import io

    cols = palette(5)
    lines = []
    for i in range(5):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), cols[i]).save(buf, format="PNG")
        lines.append(f"{1000 + i}\t{base64.b64encode(buf.getvalue()).decode()}")
    (tmp_path / "test_imgs.tsv").write_text("\n".join(lines) + "\n")
    texts = [("一只狗", [1000]), ("两只猫在草地上", [1001, 1003]), ("a red car", [1002]), ("海边的日落", [1004]),
             ("一辆红色的车", [1002])]
    colour_of = {"一只狗": cols[0], "两只猫在草地上": cols[3], "a red car": cols[2], "海边的日落": cols[1],
                 "一辆红色的车": cols[2]}
    (tmp_path / "test_texts.jsonl").write_text("\n".join(
        json.dumps({"text_id": n, "text": t, "image_ids": ids}, ensure_ascii=False) for n, (t, ids) in enumerate(texts)))
    rs = load_manifest(tmp_path / "test_texts.jsonl", ["en", "zh"])
    assert rs.name == f"test@{tmp_path.name}" and rs.num_images == 5
    assert rs.captions["en"] == ["a red car"] and len(rs.captions["zh"]) == 4
    got = evaluate_retrieval(colour_encoders(colour_of), rs, ["en", "zh"], batch_size=2)
    decoded = []
    for i in range(5):
        p = tmp_path / f"dec{i}.png"
        Image.new("RGB", (40, 30), cols[i]).save(p)
        decoded.append(p)
    for lang in ("en", "zh"):
        caps = [(t, ids) for t, ids in texts if (lang == "zh") == any("\u4e00" <= ch <= "\u9fff" for ch in t)]
        cos = cosines_from_pixels(decoded, [colour_of[t] for t, _ in caps])
        pos = [[1000 + i in ids for _, ids in caps] for i in range(5)]
        for key, value in ref_recalls(cos, pos).items():
            assert got[lang][key] == pytest.approx(value, abs=1e-12), (lang, key)
    # 两只猫 finds 1003 (its colour, a listed positive); 海边的日落 wears image 1001's colour, so it misses at R@1
    assert got["zh"]["t2i_R@1"] == 0.75 and got["en"]["t2i_R@1"] == 1.0
