"""Post-training int8 calibrates on the run's own training split: never on a class the run holds out as `unseen`."""
import json

import pytest
import torch

from compress.data.augment import to_float
from compress.errors import UserError
from compress.model import save_checkpoint
from compress.pipeline.data import load_run_data
from compress.pipeline.export import run_calibration
from compress.pipeline.refs import resolve_ref
from compress.pipeline.student import build_student
from compress.quant.calibrate import calibration_set
from compress.recipe import parse_recipe
from compress.tokenizer import BilingualTokenizer, tokenizer_corpus, train_tokenizer


@pytest.fixture(scope="module")
def run(emoji_cache):
    recipe = parse_recipe({
        "name": "cal", "data": {"limit": 40, "image_size": 32, "train_renders": 2, "unseen_fraction": 0.4,
                                "cache_dir": str(emoji_cache)},
        "students": {"image": {"arch": "vit_pico_p8"}, "text": {"arch": "text_pico", "context_length": 16,
                                                                "vocab_size": 300}, "embed_dim": 16},
    })
    data = load_run_data(recipe.data, recipe.seed)
    tok = BilingualTokenizer(train_tokenizer(tokenizer_corpus(data.train), 300), 16)
    return recipe, data, tok


def test_no_calibration_image_belongs_to_an_unseen_class(run):
    recipe, data, tok = run
    unseen = data.eval_splits["unseen"]
    assert len(unseen.class_ids) > 0  # the split really holds classes out
    unseen_names = {data.names["zh"][int(c)] for c in unseen.class_ids}
    cal = calibration_set(data.train, tok, batches=4, size=8)
    assert len(data.train) >= 32 and len(cal) == 4 and len(cal.groups) == 32
    calibrated_names = {data.train.zh[g] for g in cal.groups}
    assert calibrated_names and not calibrated_names & unseen_names
    # the images are the training split's own rows, in order (nothing rendered afresh from a default build)
    assert torch.equal(cal.image[0][0], to_float(data.train.images[:8]))
    assert cal.text[0][0].shape == (16, 16)  # each row's caption in en and zh


def test_export_of_a_checkpoint_calibrates_on_the_data_its_model_json_records(tmp_path, run):
    recipe, data, tok = run
    model = build_student(recipe, tok)
    save_checkpoint(model, tok, tmp_path / "ckpt", {"data": recipe.data.model_dump(mode="json"), "seed": recipe.seed})
    cal = run_calibration(resolve_ref(tmp_path / "ckpt"), tok)()
    assert cal.groups == calibration_set(data.train, tok).groups
    assert torch.equal(cal.image[0][0], calibration_set(data.train, tok).image[0][0])


def test_export_of_a_checkpoint_with_no_recorded_data_refuses(tmp_path, run):
    recipe, _, tok = run
    save_checkpoint(build_student(recipe, tok), tok, tmp_path / "bare")
    with pytest.raises(UserError, match="records no training data"):
        run_calibration(resolve_ref(tmp_path / "bare"), tok)()  # refused when a tower needs it


def test_a_run_folder_calibrates_on_its_recipe(tmp_path, run):
    recipe, data, tok = run
    save_checkpoint(build_student(recipe, tok), tok, tmp_path / "r" / "student_fp32")
    (tmp_path / "r" / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json")), encoding="utf-8")
    ref = resolve_ref(tmp_path / "r")
    assert ref.kind == "run" and ref.run == tmp_path / "r"
    assert run_calibration(ref, tok)().groups == calibration_set(data.train, tok).groups
