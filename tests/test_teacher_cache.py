"""Teacher-feature cache: cached targets equal the teacher's, stage 1 trains from the cache with no teacher in
memory, partial caches resume byte-identically, and every mismatch is refused in one line."""
import gc
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from compress.cli import main
from compress.data.pairs import PairSet
from compress.pipeline.data import load_run_data
from compress.errors import UserError
from compress.recipe import DistillConfig, parse_recipe
from compress.pipeline.student import build_student
from compress.tokenizer import tokenizer_corpus
from compress.train.feature_cache import CachedTargets, cache_fingerprint, verify_cache, write_cache
from compress.teachers.hf import HFTeacher
from compress.tokenizer import BilingualTokenizer, train_tokenizer
from compress.train import loop
from compress.train.data import EpochPlan, KeyCollate
from compress.train.distill import DistillStage, OnlineTargets, present_captions
from tests.hf_fixtures import make_tiny_altclip, make_tiny_chinese_clip
from tests.fuzz import NO_SHRINK

VIEWS = 2
SHARD = 8  # samples per shard: 44 samples -> 6 shards


def _recipe(emoji_cache, spec, seed=0, **teacher):
    return parse_recipe({
        "name": "tiny", "seed": seed,
        "data": {"limit": 24, "image_size": 32, "train_renders": 2, "cache_dir": str(emoji_cache)},
        "teacher": {"kind": "hf", "spec": str(spec), "cache_views": VIEWS, **teacher},
        "students": {"image": {"arch": "mobilevit_xxs"}, "text": {"arch": "text_pico", "context_length": 16, "vocab_size": 300}, "embed_dim": 32},
    })


@pytest.fixture(scope="module")
def env(tmp_path_factory, emoji_cache):
    root = tmp_path_factory.mktemp("teacher-cache")
    specs = {"altclip": make_tiny_altclip(root / "altclip"), "chinese_clip": make_tiny_chinese_clip(root / "chinese_clip")}
    recipes = {k: _recipe(emoji_cache, v) for k, v in specs.items()}
    data = load_run_data(recipes["altclip"].data, 0)
    tok = BilingualTokenizer(train_tokenizer(tokenizer_corpus(data.train), 300), 16)
    caches = {}
    for kind, recipe in recipes.items():  # the teachers are loaded here only, and dropped again
        caches[kind] = write_cache(recipe, HFTeacher.from_config(recipe.teacher), data.train, root / f"cache-{kind}",
                                   views=VIEWS, shard_size=SHARD, batch_size=16)
    gc.collect()
    return {"root": root, "specs": specs, "recipes": recipes, "pairs": data.train, "tok": tok, "manifests": caches}


def _folder(env, kind="altclip"):
    return env["root"] / f"cache-{kind}"


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _copy(env, name, kind="altclip"):
    dst = env["root"] / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(_folder(env, kind), dst)
    return dst


class Counting:
    """A real teacher, counting its image batches; `stop_after` raises KeyboardInterrupt (a killed build) there."""

    def __init__(self, teacher, stop_after=None):
        self.teacher, self.calls, self.stop_after = teacher, 0, stop_after

    def __getattr__(self, name):
        return getattr(self.teacher, name)

    def encode_image(self, pixels):
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise KeyboardInterrupt
        return self.teacher.encode_image(pixels)

    def encode_text(self, texts):
        return self.teacher.encode_text(texts)


def _one_line(err):
    text = str(err.value)
    assert "\n" not in text and text.strip() == text
    return text


def test_cache_layout_manifest_and_safetensors(env):
    m, folder = env["manifests"]["altclip"], _folder(env)
    assert m["samples"] == len(env["pairs"]) == 44 and m["views"] == VIEWS and m["rows"] == 88
    assert [s["rows"] for s in m["shards"]] == [[r, min(r + 16, 88)] for r in range(0, 88, 16)]
    assert m["shapes"] == {"embed_dim": 16, "map_channels": [32, 32], "hidden_dim": 24}
    assert m["tensors"]["map_0"] == {"dtype": "F16", "shape": [32, 4, 4]}
    assert m["match"]["teacher"]["map_layers"] == [0, 1] and m["match"]["seed"] == 0
    for s in m["shards"]:
        raw = (folder / s["file"]).read_bytes()
        assert len(raw) == s["bytes"] and hashlib.sha256(raw).hexdigest() == s["sha256"]
    tensors = load_file(str(folder / m["shards"][1]["file"]))  # the reference safetensors reader agrees
    assert tensors["image_embedding"].dtype == np.float16 and tensors["image_embedding"].shape == (16, 16)
    t = CachedTargets(folder, None, verify="full")
    np.testing.assert_array_equal(t.gather(["map_1"], np.arange(16, 32))["map_1"], tensors["map_1"])
    assert json.loads((folder / "manifest.json").read_text())["fingerprint"] == m["fingerprint"]


@pytest.mark.parametrize("kind", ["altclip", "chinese_clip"])
def test_cached_targets_equal_the_teachers_online_targets(env, kind):
    recipe, pairs, tok = env["recipes"][kind], env["pairs"], env["tok"]
    cached = CachedTargets(_folder(env, kind), cache_fingerprint(recipe, pairs))
    online = OnlineTargets(HFTeacher.from_config(recipe.teacher))
    assert vars(cached.shapes) == vars(online.shapes)
    plan = EpochPlan(pairs, 16, recipe.seed, views=VIEWS)
    keys = plan.plan(0)[0] + [(43, 1), (0, 0)]  # keys from several shards, in training order
    batch = KeyCollate(pairs, recipe.seed, tok)(keys)
    a, b = cached.image(batch), online.image(batch)
    assert a.embedding.dtype == torch.float32 and len(a.maps) == len(b.maps) == 2
    for x, y in zip([a.embedding, *a.maps], [b.embedding, *b.maps]):
        torch.testing.assert_close(x, y, rtol=2e-3, atol=2e-3 * float(y.abs().max()))
    ta, tb = cached.text(batch), online.text(batch)
    assert ta.embedding.shape[0] == len(present_captions(batch)) == tb.embedding.shape[0]
    torch.testing.assert_close(ta.embedding, tb.embedding, rtol=2e-3, atol=2e-3 * float(tb.embedding.abs().max()))
    torch.testing.assert_close(ta.hidden, tb.hidden, rtol=2e-3, atol=2e-3 * float(tb.hidden.abs().max()))


@pytest.mark.parametrize("kind", ["altclip", "chinese_clip"])
def test_stage1_trains_from_the_cache_with_no_teacher(env, kind):
    gc.collect()
    assert not any(isinstance(o, HFTeacher) for o in gc.get_objects())  # no teacher anywhere in this process
    recipe, pairs, tok = env["recipes"][kind], env["pairs"], env["tok"]
    targets = CachedTargets(_folder(env, kind), cache_fingerprint(recipe, pairs))
    student = build_student(recipe, tok)
    cfg = DistillConfig(epochs=6, batch_size=32, lr=3e-3)
    hist = loop.train(DistillStage(student, targets, cfg), pairs, tok, cfg, loop.LoopContext(seed=recipe.seed, views=VIEWS))
    assert len(hist.losses) == 6 and hist.losses[-1] < 0.8 * hist.losses[0], hist.losses
    assert {"maps", "image_embed", "text_embed", "text_hidden"} <= set(hist.parts[0])
    assert len(targets._open) == len(env["manifests"][kind]["shards"])  # every shard was read (and checksummed)
    # without views=K the plan draws views the cache does not hold: refused, naming the fix
    with pytest.raises(UserError) as err:
        loop.train(DistillStage(student, targets, cfg), pairs, tok, cfg, loop.LoopContext(seed=recipe.seed))
    assert f"LoopContext(views={VIEWS})" in _one_line(err)


def test_killed_build_resumes_byte_identical(env):
    recipe, pairs = env["recipes"]["altclip"], env["pairs"]
    folder = env["root"] / "killed"
    shutil.rmtree(folder, ignore_errors=True)
    teacher = HFTeacher.from_config(recipe.teacher)
    with pytest.raises(KeyboardInterrupt):  # killed after the shape probe and 2 of 6 shards (one batch each)
        write_cache(recipe, Counting(teacher, stop_after=3), pairs, folder, views=VIEWS, shard_size=SHARD, batch_size=16)
    assert sorted(p.name for p in folder.iterdir()) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    with pytest.raises(UserError) as err:
        CachedTargets(folder, cache_fingerprint(recipe, pairs))
    assert "incomplete" in _one_line(err) and "cache-teacher" in str(err.value)
    counting = Counting(teacher)
    write_cache(recipe, counting, pairs, folder, views=VIEWS, shard_size=SHARD, batch_size=16)
    assert counting.calls == 1 + 4  # the shape probe, then the 4 missing shards only
    assert _files(folder) == _files(_folder(env))


def test_deleted_or_corrupted_shard_is_recomputed_alone(env):
    recipe, pairs = env["recipes"]["altclip"], env["pairs"]
    expected, full = cache_fingerprint(recipe, pairs), _files(_folder(env))
    folder = _copy(env, "damaged")
    (folder / "shard-00002.safetensors").unlink()
    with pytest.raises(UserError) as err:
        CachedTargets(folder, expected)
    assert "missing shard-00002.safetensors" in _one_line(err)
    counting = Counting(HFTeacher.from_config(recipe.teacher))
    write_cache(recipe, counting, pairs, folder, views=VIEWS, shard_size=SHARD, batch_size=16)
    assert counting.calls == 1 + 1 and _files(folder) == full  # an output-shape check against the manifest, 1 shard

    path = folder / "shard-00004.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # same size, one flipped byte in the data
    path.write_bytes(bytes(raw))
    targets = CachedTargets(folder, expected)  # sizes and headers check out on open; the checksum on first read
    batch = KeyCollate(pairs, recipe.seed, None)([(33, 1), (34, 0)])  # samples 32..39 live in shard 4
    with pytest.raises(UserError) as err:
        targets.image(batch)
    assert "shard-00004.safetensors fails its sha256 check" in _one_line(err)
    with pytest.raises(UserError):
        verify_cache(folder, expected)
    counting.calls = 0
    write_cache(recipe, counting, pairs, folder, views=VIEWS, shard_size=SHARD, batch_size=16)
    assert counting.calls == 1 + 1 and _files(folder) == full

    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError) as err:
        CachedTargets(folder, expected)
    assert "truncated" in _one_line(err)


def test_a_cache_for_another_setup_is_refused_in_one_line(env, emoji_cache):
    pairs, folder, specs = env["pairs"], _folder(env), env["specs"]
    edited = pairs.images.clone()
    edited[5, 0, 0, 0] ^= 1  # one pixel of one image
    other_images = PairSet(edited, pairs.groups, pairs.en, pairs.zh)
    cases = [
        (_recipe(emoji_cache, specs["chinese_clip"]), pairs, "teacher.spec"),
        (_recipe(emoji_cache, specs["altclip"], map_layers=[0]), pairs, "teacher.map_layers is [0, 1] in the cache but [0]"),
        (_recipe(emoji_cache, specs["altclip"], text_layer=0), pairs, "teacher.text_layer"),
        (_recipe(emoji_cache, specs["altclip"], dtype="bf16"), pairs, "teacher.dtype"),
        (_recipe(emoji_cache, specs["altclip"], seed=1), pairs, "augmentation seed"),
        (_recipe(emoji_cache, specs["altclip"], cache_views=4), pairs, "teacher.cache_views=2"),
        (env["recipes"]["altclip"].model_copy(update={"data": env["recipes"]["altclip"].data.model_copy(update={"image_size": 48})}),
         pairs, "data.image_size is 32 in the cache but 48"),
        (env["recipes"]["altclip"], other_images, "training sample list differs"),
    ]
    for recipe, use, needle in cases:
        with pytest.raises(UserError) as err:
            CachedTargets(folder, cache_fingerprint(recipe, use))
        line = _one_line(err)
        assert needle in line and "dcclip-compress cache-teacher RECIPE" in line, line
    other = _recipe(emoji_cache, specs["altclip"], seed=1)
    with pytest.raises(UserError) as err:  # writing into a folder that holds another setup's cache
        write_cache(other, lambda: pytest.fail("no teacher needed to refuse"), pairs, folder, views=VIEWS)
    assert "already holds features for another setup" in _one_line(err)
    with pytest.raises(UserError) as err:
        CachedTargets(env["root"] / "nowhere", None)
    assert "does not exist" in _one_line(err)


def test_cli_cache_teacher(env, tmp_path, monkeypatch):
    spec = env["specs"]["altclip"]
    recipe = tmp_path / "r.yaml"
    data = env["recipes"]["altclip"].data
    recipe.write_text(
        f"name: tinycli\ndata: {{limit: 24, image_size: 32, train_renders: 2, cache_dir: '{data.cache_dir}'}}\n"
        f"teacher: {{kind: hf, spec: '{spec}', cache_views: 2}}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DCCLIP_HOME", str(tmp_path))
    run = CliRunner().invoke(main, ["cache-teacher", str(recipe), "--views", "1"])
    assert run.exit_code == 0, run.output
    folder = next((tmp_path / ".cache" / "teacher-features").iterdir())
    assert folder.name.startswith("tinycli-") and str(folder.relative_to(tmp_path)) in run.stdout
    assert "kB" in run.stdout and "teacher.cache_views=1" in run.stdout  # says how to train from it
    assert json.loads((folder / "manifest.json").read_text())["views"] == 1
    again = CliRunner().invoke(main, ["cache-teacher", str(recipe), "--views", "1"])  # complete: checked, kept
    assert again.exit_code == 0 and _files(folder)
    for args, needle in [
        (["--views", "1", "--out", str(folder), "--set", "seed=3"], "another setup"),
        (["--views", "0"], "views"),
        (["--set", "teacher.kind=none"], "no teacher"),
        (["--set", "teacher.spec=/nonexistent/teacher"], "does not exist"),
    ]:
        bad = CliRunner().invoke(main, ["cache-teacher", str(recipe), *args])
        assert bad.exit_code == 2, (args, bad.output)
        lines = [l for l in bad.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in bad.output, (args, bad.stderr)


def _in_small_tmpfs(mnt, size: str, command: str) -> subprocess.CompletedProcess:
    """`command` with a `size` tmpfs mounted at `mnt`, in a private mount namespace (no root needed where user
    namespaces are allowed): a real full disk, not a patched disk_usage."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no unshare -rm here: a small tmpfs cannot be mounted")
    script = f"mount -t tmpfs -o size={size} tmpfs '{mnt}' && {command}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)


def test_a_cache_that_does_not_fit_its_disk_is_refused_before_any_shard(env, tmp_path):
    """issue 17: the estimate (bytes per view x views x samples) against the free disk, in one line, nothing written."""
    spec, data = env["specs"]["altclip"], env["recipes"]["altclip"].data
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: tinydisk\ndata: {{limit: 24, image_size: 32, train_renders: 2, cache_dir: '{data.cache_dir}'}}\n"
        f"teacher: {{kind: hf, spec: '{spec}', cache_views: 2}}\n", encoding="utf-8")
    mnt = tmp_path / "small"
    mnt.mkdir()
    cli = f"'{sys.executable}' -m compress.cli cache-teacher '{recipe}' --views 8 --out '{mnt}/cache'"
    r = _in_small_tmpfs(mnt, "256k", f"{cli}; rc=$?; echo files=$(ls -A '{mnt}' | wc -l); exit $rc")
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and r.stderr.rstrip().endswith(errors[0]), r.stderr
    assert "free" in errors[0] and "8 views x 44 samples" in errors[0] and "--views" in errors[0]
    assert "Traceback" not in r.stderr
    assert "files=0" in r.stdout  # refused before the folder, let alone a shard, was written
    # issue 19: remounted with room, the same command builds the cache, and `verify` checks every shard of it
    again = (f"{cli}; echo rc1=$?; mount -o remount,size=64m '{mnt}' && {cli} && "
             f"'{sys.executable}' -m compress.cli verify '{mnt}/cache'")
    r = _in_small_tmpfs(mnt, "256k", again)
    assert "rc1=2" in r.stdout and r.returncode == 0 and "every sha256 checked" in r.stdout, r.stderr[-2000:]


def test_the_run_reads_stage1_targets_from_the_recipes_cache(env):
    from compress.pipeline.data import RunData
    from compress.pipeline.student import stage1_targets

    recipe = env["recipes"]["chinese_clip"]
    data = RunData(env["pairs"], {}, {})
    with_cache = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={"cache": str(_folder(env, "chinese_clip"))})})
    targets = stage1_targets(with_cache, data, None)  # no teacher
    assert isinstance(targets, CachedTargets) and targets.views == VIEWS
    wrong = with_cache.model_copy(update={"teacher": with_cache.teacher.model_copy(update={"spec": str(env["specs"]["altclip"])})})
    with pytest.raises(UserError) as err:
        stage1_targets(wrong, data, None)
    assert "teacher.spec" in _one_line(err)


@pytest.mark.parametrize("mode", ["pooled:2", "none"])
def test_cache_map_modes_round_trip_and_stage1_trains_on_them(env, mode):
    """issue 17: teacher.cache_maps pooled:G stores each map average-pooled to G x G and stage 1 pools the student's
    maps the same way; none stores no maps and stage 1 has no map term. Smaller than full, refused by a run that asks
    for another mode."""
    import torch.nn.functional as F

    base, pairs, tok = env["recipes"]["altclip"], env["pairs"], env["tok"]
    recipe = base.model_copy(update={"teacher": base.teacher.model_copy(update={"cache_maps": mode})})
    folder = env["root"] / f"cache-{mode.replace(':', '')}"
    teacher = HFTeacher.from_config(recipe.teacher)
    m = write_cache(recipe, teacher, pairs, folder, views=VIEWS, shard_size=SHARD, batch_size=16)
    assert m["maps"] == mode and m["bytes"] < env["manifests"]["altclip"]["bytes"]
    maps = sorted(k for k in m["tensors"] if k.startswith("map_"))
    if mode == "none":
        assert maps == [] and m["shapes"]["map_channels"] == []
    else:
        assert [m["tensors"][k]["shape"] for k in maps] == [[32, 2, 2], [32, 2, 2]]
    with pytest.raises(UserError) as err:  # a run that wants full maps
        CachedTargets(folder, cache_fingerprint(base, pairs))
    assert "teacher.cache_maps" in _one_line(err)
    cached = CachedTargets(folder, cache_fingerprint(recipe, pairs))
    batch = KeyCollate(pairs, recipe.seed, tok)([(0, 0), (43, 1), (7, 0)])
    online = OnlineTargets(teacher).image(batch)
    want = [] if mode == "none" else [F.adaptive_avg_pool2d(x, 2) for x in online.maps]
    got = cached.image(batch)
    assert len(got.maps) == len(want)
    for x, y in zip(got.maps, want):
        torch.testing.assert_close(x, y, rtol=2e-3, atol=2e-3 * float(y.abs().max()))
    del teacher, online
    gc.collect()
    cfg = DistillConfig(epochs=1, batch_size=32, lr=3e-3)
    stage = DistillStage(build_student(recipe, tok), cached, cfg)
    assert len(stage.adapters.maps) == (0 if mode == "none" else 2)
    hist = loop.train(stage, pairs, tok, cfg, loop.LoopContext(seed=recipe.seed, views=VIEWS))
    assert all(np.isfinite(hist.losses))
    assert (float(hist.parts[0]["maps"]) == 0.0) == (mode == "none")


@pytest.mark.parametrize("bad", ["pooled:0", "pooled:65", "pooled", "half", "pooled:2x2"])
def test_cache_maps_values_are_checked(bad):
    from pydantic import ValidationError

    from compress.recipe.schema import TeacherConfig

    with pytest.raises(ValidationError, match="cache_maps"):
        TeacherConfig(cache_maps=bad)
    assert TeacherConfig(cache_maps="pooled:64").cache_maps == "pooled:64"


def test_processes_write_their_own_slices_and_one_manifest_covers_all(env):
    """issue 17: under accelerate launch, process r computes shards i % world == r; process 0 writes the manifest.
    Two processes played in turn (1, then 0: process 0's barrier is where process 1 has finished) give the bytes of
    a one-process build."""
    from compress.train.feature_cache.write import Split

    recipe, pairs = env["recipes"]["altclip"], env["pairs"]
    folder = env["root"] / "split"
    shutil.rmtree(folder, ignore_errors=True)
    teacher = HFTeacher.from_config(recipe.teacher)
    counting = Counting(teacher)
    assert write_cache(recipe, counting, pairs, folder, views=VIEWS, shard_size=SHARD, batch_size=16,
                       split=Split(1, 2)) == {}  # process 1 writes no manifest
    assert not (folder / "manifest.json").exists()
    assert sorted(p.name for p in folder.iterdir()) == [f"shard-{i:05d}.safetensors" for i in (1, 3, 5)]
    m = write_cache(recipe, teacher, pairs, folder, views=VIEWS, shard_size=SHARD, batch_size=16, split=Split(0, 2))
    assert _files(folder) == _files(_folder(env)) and m == env["manifests"]["altclip"]
    assert counting.calls == 1 + 3  # the shape probe, then one batch for each of its three shards


@pytest.mark.parametrize("damage", [
    lambda m: m.pop("views"), lambda m: m.update(shapes=[1, 2]), lambda m: m["shards"][0].pop("rows"),
    lambda m: m.update(tensors=["map_0"]), lambda m: m.update(shards={"file": 1}), lambda m: m["shards"][1].update(file=7),
    lambda m: m.pop("match"), lambda m: m.update(samples="many"),
])
def test_a_damaged_manifest_is_one_line(env, damage):
    """issue 19: the cache's manifest.json edited or half-written by something else is refused, never a KeyError."""
    folder = _copy(env, "manifest-damage")
    m = json.loads((folder / "manifest.json").read_text())
    damage(m)
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError) as err:
        CachedTargets(folder, cache_fingerprint(env["recipes"]["altclip"], env["pairs"]))
    assert "cache-teacher" in _one_line(err)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), phases=NO_SHRINK)
@given(data=st.data())
def test_a_damaged_cache_is_one_line(env, tmp_path_factory, data):
    """issue 19, fuzzed through `verify` in process: a shard's bytes damaged (its size and sha256 are in the manifest:
    always exit 2), the manifest's bytes damaged, or one node of the manifest's structure changed (exit 2, or exit 0
    when the node is one the reader does not use); nothing in the cache changes."""
    from tests.fuzz import cli, clean_outcome, damage_file, tree_hash

    work = tmp_path_factory.mktemp("case")
    folder = work / "cache"
    shutil.copytree(_folder(env), folder)
    name = data.draw(st.sampled_from(sorted(p.name for p in folder.iterdir())))
    structural = name == "manifest.json" and data.draw(st.booleans())
    what = damage_file(folder / name, data.draw, json_within=() if structural else None)
    before = tree_hash(work)
    code = clean_outcome(cli(["verify", str(folder)]), what, ok_allowed=name == "manifest.json")
    assert tree_hash(work) == before, what
    if code == 0:
        assert name == "manifest.json", what


def test_verify_says_what_a_good_cache_holds(env):
    from tests.fuzz import cli

    res = cli(["verify", str(_folder(env))])
    assert res.exit_code == 0 and "every sha256 checked" in res.output, res.output


def test_a_folder_with_a_users_manifest_is_refused(env, tmp_path):
    """issue 19: cache-teacher --out onto a folder whose manifest.json is not a teacher cache's: one line, untouched."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"name": "my project"}')
    recipe = env["recipes"]["altclip"]
    with pytest.raises(UserError) as err:
        write_cache(recipe, None, env["pairs"], folder, views=VIEWS, shard_size=SHARD, batch_size=16)
    assert "did not write" in _one_line(err) and (folder / "manifest.json").read_text() == '{"name": "my project"}'
    assert [p.name for p in folder.iterdir()] == ["manifest.json"]
