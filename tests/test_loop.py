"""The one training loop, in process on tiny real data: gradient accumulation, clipping, checkpoints (atomic, pruned,
exact), CSV scalars, and one-language rows in the contrastive loss."""
from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import load_file

from compress.data.pairs import PairSet
from compress.pipeline.data import load_run_data
from compress.recipe import AlignConfig, TrainingConfig, parse_recipe
from compress.pipeline.student import build_student
from compress.tokenizer import tokenizer_corpus
from compress.tokenizer import BilingualTokenizer, train_tokenizer
from compress.train import checkpoint, loop
from compress.train.align import AlignStage
from compress.train.data import KeyCollate


@pytest.fixture(scope="module")
def tiny(emoji_cache):
    recipe = parse_recipe({
        "name": "loop", "data": {"limit": 24, "image_size": 32, "train_renders": 2, "cache_dir": str(emoji_cache)},
        "students": {"image": {"arch": "vit_pico_p8"}, "text": {"arch": "text_pico", "context_length": 16, "vocab_size": 300},
                     "embed_dim": 32},
    })
    data = load_run_data(recipe.data, recipe.seed)
    tok = BilingualTokenizer(train_tokenizer(tokenizer_corpus(data.train), 300), 16)
    return recipe, data, tok


def _align(recipe, tok, **cfg) -> tuple[AlignStage, AlignConfig]:
    model = build_student(recipe, tok).train()
    c = AlignConfig(**({"epochs": 3, "batch_size": 8, "lr": 1e-3} | cfg))
    return AlignStage(model.image, model.text, model.logit_scale, c), c


def _weights(stage) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in stage.state_dict().items()}


def test_grad_accum_halves_optimizer_steps_and_records_batches(tiny, tmp_path):
    recipe, data, tok = tiny
    torch.manual_seed(0)
    stage, cfg = _align(recipe, tok, grad_accum=2)
    hist = loop.train(stage, data.train, tok, cfg, loop.LoopContext(folder=tmp_path))
    assert hist.batch == {"world_size": 1, "global_batch": 8, "global_micro_batch": 4, "per_process_micro_batch": 4,
                          "grad_accum": 2}
    micro_per_epoch = data.train.num_groups // 4 // 2 * 2  # full micro-batches, whole steps
    assert hist.steps == 3 * micro_per_epoch // 2
    with (tmp_path / "logs" / "scalars.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, hist.steps + 1))
    assert all(float(r["images_per_s"]) > 0 and float(r["lr"]) > 0 for r in rows)


def test_clipping_bounds_the_update(tiny):
    recipe, data, tok = tiny
    torch.manual_seed(0)
    free, cfg = _align(recipe, tok, epochs=1, lr=1e-2, warmup=0.0)
    before = _weights(free)
    loop.train(free, data.train, tok, cfg, loop.LoopContext())
    torch.manual_seed(0)
    clipped, ccfg = _align(recipe, tok, epochs=1, lr=1e-2, warmup=0.0, clip_grad_norm=1e-6)
    loop.train(clipped, data.train, tok, ccfg, loop.LoopContext())
    moved = lambda s: sum(float((s.state_dict()[k] - before[k]).abs().sum()) for k in before)  # noqa: E731
    assert moved(clipped) < moved(free)  # AdamW normalises the step, but a tiny clip still damps the first moments


class Crash(Exception):
    pass


def test_checkpoints_are_atomic_pruned_and_an_interrupted_stage_resumes_exactly(tiny, tmp_path):
    recipe, data, tok = tiny
    training = TrainingConfig(checkpoint_every=2, keep_last=2, tensorboard=False)
    torch.manual_seed(0)
    full, cfg = _align(recipe, tok)
    clean = loop.train(full, data.train, tok, cfg, loop.LoopContext(folder=tmp_path / "full", training=training))
    found = checkpoint.checkpoints(tmp_path / "full" / "checkpoints" / "align")
    per_epoch = data.train.num_groups // 8
    assert [p.name for p in found] == [f"pos-{2 * per_epoch:09d}", f"pos-{3 * per_epoch:09d}"]  # older ones pruned
    (found[-1].parent / ".pos-000000010.partial").mkdir()  # a kill during a write leaves only a hidden partial
    assert checkpoint.latest(found[-1].parent) == found[-1]
    assert load_file(str(found[-1] / "model.safetensors")).keys() == full.state_dict().keys()

    torch.manual_seed(0)
    broken, _ = _align(recipe, tok)
    steps = []

    def crash_at_step_5() -> None:  # dies one step after the step-4 checkpoint
        steps.append(1)
        if len(steps) == 5:
            raise Crash

    broken.after_step = crash_at_step_5
    with pytest.raises(Crash):
        loop.train(broken, data.train, tok, cfg, loop.LoopContext(folder=tmp_path / "killed", training=training))
    torch.manual_seed(123)  # whatever the process did meanwhile, the checkpoint restores every RNG
    resumed, _ = _align(recipe, tok)
    hist = loop.train(resumed, data.train, tok, cfg, loop.LoopContext(folder=tmp_path / "killed", training=training,
                                                                        resume=True))
    assert hist.losses == clean.losses and hist.parts == clean.parts
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_one_language_rows_take_part_only_in_their_language(tiny):
    recipe, data, tok = tiny
    n = data.train.num_groups
    en = [data.train.en[g] if g % 3 else None for g in range(n)]  # a third of the groups lack English
    zh = [data.train.zh[g] if g % 3 != 1 else None for g in range(n)]
    pairs = PairSet(data.train.images, data.train.groups, en, zh, templated=True)
    keys = [(i, 0) for i in range(0, len(pairs), 2)][:12]
    batch = KeyCollate(pairs, 0, tok)(keys)
    groups = [int(pairs.groups[i]) for i, _ in keys]
    assert batch.has_en.tolist() == [en[g] is not None for g in groups]
    assert all((c is None) == (en[g] is None) for c, g in zip(batch.en, groups))
    stage, _ = _align(recipe, tok)
    loss, parts = stage(batch)
    loss.backward()
    assert torch.isfinite(loss) and {"clip_en", "clip_zh"} <= set(parts)
    all_zh = KeyCollate(PairSet(data.train.images, data.train.groups, [None] * n, data.train.zh), 0, tok)(keys)
    loss, parts = stage(all_zh)
    assert "clip_en" not in parts and "clip_zh" in parts and torch.isfinite(loss)


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tiny, tmp_path):
    """issue 19: the newest checkpoint truncated: the stage resumes from the previous one, with a warning, and ends
    bit-identical to an uninterrupted run; with every checkpoint damaged, one line says so."""
    from compress.errors import UserError

    recipe, data, tok = tiny
    training = TrainingConfig(checkpoint_every=1, keep_last=3, tensorboard=False)
    torch.manual_seed(0)
    full, cfg = _align(recipe, tok)
    clean = loop.train(full, data.train, tok, cfg, loop.LoopContext(folder=tmp_path / "full", training=training))
    torch.manual_seed(0)
    broken, _ = _align(recipe, tok)
    steps = []

    def crash_at_step_4() -> None:
        steps.append(1)
        if len(steps) == 4:
            raise Crash

    broken.after_step = crash_at_step_4
    with pytest.raises(Crash):
        loop.train(broken, data.train, tok, cfg, loop.LoopContext(folder=tmp_path / "killed", training=training))
    found = checkpoint.checkpoints(tmp_path / "killed" / "checkpoints" / "align")
    weights = found[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated newest
    torch.manual_seed(123)
    resumed, _ = _align(recipe, tok)
    hist = loop.train(resumed, data.train, tok, cfg, loop.LoopContext(folder=tmp_path / "killed", training=training,
                                                                        resume=True))
    assert hist.losses == clean.losses
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    ckpts = tmp_path / "again" / "checkpoints" / "align"
    ckpts.mkdir(parents=True)
    for i, p in enumerate(found[:2]):  # every checkpoint damaged: a pickle where safetensors belongs, an edited state
        dst = ckpts / p.name
        dst.mkdir()
        (dst / "state.json").write_text("{}" if i else "{not json")
        (dst / "model.safetensors").write_bytes(b"\x80\x04\x95 pickle")
    with pytest.raises(UserError) as err:
        loop.train(_align(recipe, tok)[0], data.train, tok, cfg,
                   loop.LoopContext(folder=tmp_path / "again", training=training, resume=True))
    assert "every checkpoint" in str(err.value) and "\n" not in str(err.value)


def test_resume_with_another_recipe_is_refused_in_one_line(tiny, tmp_path):
    """issue 19: --resume of a run folder trained with another weight-shaping recipe names the first differing key."""
    import json as _json

    from compress.errors import UserError
    from compress.pipeline.run import run_recipe

    recipe, _, _ = tiny
    out = tmp_path / "run"
    (out / "student_fp32").mkdir(parents=True)  # a started run
    (out / "recipe.json").write_text(_json.dumps(recipe.model_dump()))
    wider = recipe.model_copy(update={"students": recipe.students.model_copy(update={"embed_dim": 64})})
    with pytest.raises(UserError) as err:
        run_recipe(wider, out, resume=True, distributed=False)
    msg = str(err.value)
    assert "students.embed_dim is 32 there but 64 in this recipe" in msg and "--out" in msg and "\n" not in msg
    (out / "recipe.json").write_text("{broken")
    with pytest.raises(UserError, match="recipe.json': is not valid JSON"):
        run_recipe(recipe, out, resume=True, distributed=False)
    assert recipe.first_difference(recipe) is None


def test_resume_may_change_a_stage_not_reached_yet(tiny, tmp_path):
    """A finished fp32 student with no QAT checkpoint: other QAT settings resume (bench/qat_sweep.py does this);
    other stage-2 settings do not."""
    import json as _json

    from compress.errors import UserError
    from compress.pipeline.run import check_same_recipe

    recipe, _, _ = tiny
    out = tmp_path / "run"
    (out / "student_fp32").mkdir(parents=True)
    (out / "recipe.json").write_text(_json.dumps(recipe.model_dump()))
    check_same_recipe(recipe.model_copy(update={"qat": recipe.qat.model_copy(update={"lr": 3e-5}), "name": "x"}), out)
    with pytest.raises(UserError, match="align.lr"):
        check_same_recipe(recipe.model_copy(update={"align": recipe.align.model_copy(update={"lr": 3e-5})}), out)
    (out / "checkpoints" / "qat").mkdir(parents=True)  # QAT started: its settings count now
    with pytest.raises(UserError, match="qat.lr"):
        check_same_recipe(recipe.model_copy(update={"qat": recipe.qat.model_copy(update={"lr": 3e-5})}), out)
