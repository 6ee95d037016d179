"""The ELEVATER class-name and template data: 20 datasets, both languages, nothing empty, usable prompts."""
import json

import pytest

from compress.eval.elevater import DATA_DIR, METRICS, elevater_datasets, fill

EXPECTED_KEYS = {
    "caltech-101", "cifar-10", "cifar-100", "country211", "dtd", "eurosat_clip", "fer-2013",
    "fgvc-aircraft-2013b-variants102", "food-101", "gtsrb", "hateful-memes", "kitti-distance", "mnist",
    "oxford-flower-102", "oxford-iiit-pets", "patch-camelyon", "rendered-sst2", "resisc45_clip", "stanford-cars",
    "voc-2007-classification",
}


def test_twenty_datasets_in_both_languages():
    table = elevater_datasets()
    assert set(table) == EXPECTED_KEYS and len(table) == 20
    for key, ds in table.items():
        assert ds.metric in METRICS, key
        for lang in ("en", "zh"):
            names, templates = ds.classes[lang], ds.templates[lang]
            assert len(names) == ds.num_classes, (key, lang)
            assert all(isinstance(n, str) and n.strip() for n in names), (key, lang)
            assert len(set(names)) == len(names), (key, lang, "duplicate class names")
            assert templates and all(t.count("{}") == 1 for t in templates), (key, lang)
        # the zh side really is Chinese, not a copy of the English list (aircraft designations such as 737-800 stay Latin)
        assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in n) for n in ds.classes["zh"]) >= 0.25 * ds.num_classes, key


def test_metrics_follow_the_elevater_protocol():
    table = elevater_datasets()
    assert table["voc-2007-classification"].metric == "11point_mAP" and table["voc-2007-classification"].multilabel
    assert table["hateful-memes"].metric == "roc_auc"
    for key in ("caltech-101", "fgvc-aircraft-2013b-variants102", "oxford-flower-102", "oxford-iiit-pets"):
        assert table[key].metric == "mean_per_class", key
    assert table["cifar-10"].metric == "accuracy"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_prompts_are_distinct_per_class(lang):
    for key, ds in elevater_datasets().items():
        prompts = [fill(ds.templates[lang][0], n) for n in ds.classes[lang]]
        assert len(set(prompts)) == len(prompts), key


def test_sources_are_written_down():
    text = (DATA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    assert "Chinese-CLIP" in text and "ELEVATER" in text
    meta = json.loads((DATA_DIR / "datasets.json").read_text(encoding="utf-8"))
    assert list(meta) == list(elevater_datasets())
