"""Architecture search: every space builds, runs and lowers; the latency table and its reference times; relative and
absolute budgets; the predictor's pruning; the budget filter; a searched spec round-trips checkpoint -> export ->
.pte -> eval; a tiny search through the CLI; bad `search:` values."""
import json
import random
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from compress.cli import main
from compress.recipe import load_recipe
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.search.latency import Budget, Latency, LatencyTable, Measurer, NamedCandidate, Predictor
from tests.helpers import home_at
from students.spaces import (
    IMAGE_FAMILIES, ImageCandidate, ImageSpace, TextCandidate, sample_image, sample_image_candidates,
)

TEACHER = {
    "name": "tiny_teacher", "data": {"limit": 30, "image_size": 32, "train_renders": 2, "unseen_fraction": 0.2},
    "teacher": {"kind": "none"},
    "students": {"image": {"arch": "vit_pico_p8"}, "text": {"arch": "text_pico", "context_length": 16, "vocab_size": 400}, "embed_dim": 32},
    "distill": {"enabled": False}, "align": {"epochs": 3, "batch_size": 16, "lr": 1e-3},
    "qat": {"enabled": False}, "export": {"enabled": False}, "eval": {"splits": ["eval"]},
}
SPACE = {"families": ["vit", "mobilevitv2", "fastvit"], "image_sizes": [32]}
TRIALS, BUDGET, EMBED = 6, 1.0, 32
REFERENCE = "vit_pico_p8"  # the relative budget's reference: BUDGET x its int8 latency
OTHER_MACHINE = 3.0  # the pre-filled rows were "measured" where the reference took 3 ms: ms in them are 3x the ratios


# The smallest spec of each family (fewest blocks: lowering time follows the graph size); drawn specs are checked too.
MINIMAL = {
    "vit": dict(patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0),
    "mobilevit": dict(stem=8, channels=[8, 16, 24, 32, 40], ir_depth=1, transformer_dims=[32, 32, 32],
                      transformer_depths=[1, 1, 1], expansion=2.0, num_features=64),
    "mobilevitv2": dict(multiplier=0.25, ir_depth=1, transformer_depths=[1, 1, 1], expansion=2.0),
    "fastvit": dict(layers=[1, 1, 1, 1], embed_dims=[16, 32, 64, 128], mlp_ratio=2.0, last_mixer="attention"),
    "mobilenetv4": dict(multiplier=0.35, ir_repeats=[1, 1], expansion=2.0, num_features=64),
}


def fake_ratio(cand: ImageCandidate) -> float:
    """A deterministic stand-in latency in reference units (pre-filled into the table): what the budget filter is
    tested against."""
    return {"vit": 0.5, "mobilevitv2": 0.8, "fastvit": 3.0}[cand.family] + len(json.dumps(cand.arch)) % 7 * 0.01


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_every_image_space_builds_runs_and_lowers(family):
    from mobile_export.lower.targets import lower_to_pte
    from students.registry import create_image_tower

    rng = random.Random(0)
    for _ in range(3):  # drawn candidates build and run (at the space's sizes)
        cand = sample_image(family, 48, rng)
        assert create_image_tower("unused", 16, 48, cand.spec()).eval()(torch.rand(2, 3, 48, 48)).shape == (2, 16)
    tower = create_image_tower("unused", 16, 32, ImageCandidate(family, 32, MINIMAL[family]).spec()).eval()
    assert tower(torch.rand(2, 3, 32, 32)).shape == (2, 16)
    program = lower_to_pte(tower, (torch.rand(1, 3, 32, 32),))
    assert program.size_bytes > 0 and program.delegation["delegated_nodes"] > 0


def test_text_space_lowers_int8_against_its_reference_and_a_table_hit_skips_measurement(tmp_path):
    cand = TextCandidate(width=32, layers=1, heads=2, mlp_ratio=2.0, context_length=8)
    ref = TextCandidate(width=32, layers=2, heads=2, mlp_ratio=2.0, context_length=8)
    first = Measurer(LatencyTable(tmp_path / "t.jsonl"), ref, runs=4, rounds=2, embed_dim=16, vocab_size=100)
    both = first.measure(cand, ("int8", "fp32"))
    lat = both["int8"]
    assert lat.ms > 0 and lat.ref_ms > 0 and first.measured == 1
    row = first.row(cand, "int8")
    assert row["ref_ms"] == lat.ref_ms and row["reference"] == ref.name() and "float_ops" in row
    # fp32 is timed against the reference's int8 program too: one unit, so fp32 ratio / int8 ratio is the speed-up
    assert first.row(cand, "fp32")["reference_quant"] == row["reference_quant"] == "int8"
    again = Measurer(LatencyTable(tmp_path / "t.jsonl"), ref, runs=4, embed_dim=16, vocab_size=100)
    assert again.measure(cand, ("int8",))["int8"] == lat and again.measured == 0 and again.hits == 1
    other_threads = Measurer(LatencyTable(tmp_path / "t.jsonl"), ref, threads=2, embed_dim=16, vocab_size=100)
    assert other_threads.lookup(cand, "int8") is None  # the key holds the thread count
    other_ref = Measurer(LatencyTable(tmp_path / "t.jsonl"), cand, embed_dim=16, vocab_size=100)
    assert other_ref.lookup(cand, "int8") is None  # ... and the reference


def test_mobilenetv4_int8_is_fully_quantized_and_delegated():
    """The integer-friendly family: every op in XNNPACK, and only residual adds / the pixel normalisation left in
    float by the int8 quantizer (MobileViT leaves LayerNorm, matmuls, softmax and SiLU there)."""
    from compress.search.latency import lower_candidate
    from students.registry import create_image_tower

    cand = ImageCandidate("mobilenetv4", 32, MINIMAL["mobilenetv4"])
    tower = create_image_tower("unused", 16, 32, cand.spec())
    program, floats = lower_candidate(tower, cand, "int8", 100)
    assert program.delegation["non_delegated_ops"] == {} and program.size_bytes > 0
    assert set(floats) <= {"add", "sub", "div"}, floats


def test_a_relative_budget_converts_a_cached_row_from_another_machine():
    """A row holds the candidate's and the reference's ms from one sitting; a budget compares their ratio, so rows
    measured on a 3x slower machine decide exactly as rows measured here."""
    here, there = Latency(0.30, 0.32), Latency(0.90, 0.96)  # the same candidate, a slower machine
    budget = Budget.relative(1.0, "mobilevit_xxs_r64")
    assert budget.fits(here) and budget.fits(there) and here.ratio == pytest.approx(there.ratio)
    assert not Budget.relative(0.9, "r").fits(there)  # 0.9375x the reference: over a 0.9x budget
    # An absolute budget is converted with the reference timed in this sitting: 0.33 ms here, reference 0.32 ms.
    absolute = Budget.absolute(0.33, "r", reference_ms=0.32)
    assert absolute.factor == pytest.approx(0.33 / 0.32) and absolute.fits(there)  # 0.9375 <= 1.03
    assert not Budget.absolute(0.29, "r", reference_ms=0.32).fits(there)  # 0.9375 > 0.906
    assert "0.33 ms" in absolute.describe() and "1.03" in absolute.describe()


@settings(max_examples=60, deadline=None)
@given(points=st.lists(st.tuples(st.floats(1, 500), st.floats(0.05, 5), st.floats(0.05, 20)), min_size=2, max_size=8),
       checks=st.lists(st.tuples(st.floats(0.05, 20), st.floats(0.05, 20)), min_size=0, max_size=6),
       measured=st.floats(0.05, 20), limit=st.floats(0.1, 10), margin=st.floats(0, 1))
def test_the_predictor_never_prunes_inside_its_error_band(points, checks, measured, limit, margin):
    """Whatever it was fitted on: no pruning before min_errors checked predictions, and a prune only when the
    prediction (by the family's own fit) is beyond limit x (1 + band); so a candidate that fits, predicted within the
    band, is never pruned."""
    p = Predictor(margin=margin)
    for macs, params, value in points:
        p.add("f", int(macs * 1e6), int(params * 1e6), value)
    for pred, meas in checks:
        p.observe(pred, meas)
    pred = p.predict("f", 40_000_000, 1_000_000)
    assert pred is not None and pred > 0
    band = p.band()
    if len(checks) < p.min_errors:
        assert band is None and not p.prunes(pred, limit)
        return
    assert band >= margin
    assert p.prunes(pred, limit) == (pred > limit * (1 + band))
    assert not p.prunes(pred * 1e6, limit, own_fit=False)  # a pooled (cross-family) fit only orders the work
    if measured <= limit * (1 - 1e-9) and abs(pred - measured) <= band * measured:  # fits; the band covers it
        assert not p.prunes(pred, limit)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, emoji_cache):
    """A tiny image search through the CLI, its latencies pre-filled in the table (no lowering: fast, deterministic)."""
    root = tmp_path_factory.mktemp("search")
    TEACHER["data"]["cache_dir"] = str(emoji_cache)
    (root / "teacher.yaml").write_text(yaml.safe_dump(TEACHER))
    recipe = {
        "name": "tiny_search", "data": dict(TEACHER["data"]),
        "teacher": {"kind": "reference", "recipe": str(root / "teacher.yaml")},
        "students": {"image": {"arch": "search"}, "text": {"arch": "text_pico", "context_length": 16, "vocab_size": 400},
                     "embed_dim": EMBED},
        "distill": {"batch_size": 16},
        "search": {"budget": {"image": {"reference": REFERENCE, "factor": BUDGET}}, "quant": ["int8"],
                   "seed_measurements": 1, "space": {"image": SPACE},
                   "trials": {"image": TRIALS}, "proxy": {"candidates": 3, "steps": 1, "batch_size": 8, "holdout": 8}},
    }
    (root / "search.yaml").write_text(yaml.safe_dump(recipe))
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=root) as cwd, home_at(cwd):
        measurer = Measurer(LatencyTable(Path(cwd) / ".cache/latency/table.jsonl"), NamedCandidate(REFERENCE, "image", 32),
                            embed_dim=EMBED)
        for cand in sample_image_candidates(ImageSpace(tuple(SPACE["families"]), (32,)), TRIALS, 0):
            measurer.table.put(measurer.key(cand, "int8"), {"ms": fake_ratio(cand) * OTHER_MACHINE,
                                                            "ref_ms": OTHER_MACHINE})
        res = runner.invoke(main, ["search", str(root / "search.yaml")], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        yield Path(cwd) / "runs/tiny_search/search", res.output


def test_search_writes_candidates_pareto_and_best(searched):
    folder, _ = searched
    rows = [json.loads(line) for line in (folder / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == TRIALS and {r["family"] for r in rows} == set(SPACE["families"])
    for r in rows:
        assert {"spec", "family", "params", "macs", "fp32_ms", "int8_ms", "int8_ratio", "int8_speedup",
                "proxy_top1"} <= set(r)
        assert r["fp32_ms"] is None and r["int8_speedup"] is None  # search.quant: [int8]
    assert (folder / "pareto.md").is_file() and (folder / "pareto.png").stat().st_size > 0
    best = load_recipe(folder / "best.yaml")
    assert best.students.image.arch == "custom" and best.students.image.spec["family"] in SPACE["families"]


def test_budget_filter_only_trains_measured_candidates_under_budget(searched):
    folder, _ = searched
    rows = [json.loads(line) for line in (folder / "candidates.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["proxy_top1"] is not None]
    assert trained and all(r["int8_ratio"] is not None and r["int8_ratio"] <= BUDGET for r in trained)
    assert any(r["int8_ms"] > BUDGET for r in trained)  # over BUDGET in the other machine's ms, under it as a ratio
    assert all(set(r["proxy_top1"]) == {"en", "zh"} for r in trained)
    over = [r for r in rows if r["int8_ratio"] is not None and r["int8_ratio"] > BUDGET]
    assert over and all(r["proxy_top1"] is None for r in over)  # fastvit (3x the reference) never trains
    summary = json.loads((folder / "summary.json").read_text())["towers"]["image"]
    assert summary["winner"]["int8_ratio"] <= BUDGET and summary["seconds"]["lowerings"] == 0
    assert summary["budget"]["factor"] == BUDGET and summary["budget"]["reference"] == f"{REFERENCE}_r32"
    assert "predictor_error" in summary and "pruned" in summary["predictor_error"]


def test_searched_spec_round_trips_checkpoint_export_pte_eval(searched, tmp_path, emoji_cache):
    from compress.model import DualEncoder, DualEncoderSpec, load_checkpoint, save_checkpoint
    from compress.tokenizer import BilingualTokenizer, train_tokenizer

    folder, _ = searched
    best = load_recipe(folder / "best.yaml")
    tok = BilingualTokenizer(train_tokenizer(["a red apple", "一个红苹果", "a dog", "一只狗"] * 5, 200), 8)
    spec = DualEncoderSpec("custom", "custom", 16, best.data.image_size, 8, tok.vocab_size,
                           image_spec=best.students.image.spec,
                           text_spec={"family": "text", "width": 32, "layers": 1, "heads": 2, "mlp_ratio": 2.0})
    model = DualEncoder(spec)
    save_checkpoint(model, tok, tmp_path / "ckpt")
    again, _, _ = load_checkpoint(tmp_path / "ckpt")  # rebuilt from the spec alone: no registry entry
    assert again.spec == spec
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=tmp_path):
        res = runner.invoke(main, ["export", str(tmp_path / "ckpt"), "--quant", "fp32", "--out", str(tmp_path / "exp")])
        assert res.exit_code == 0, res.output
        assert (tmp_path / "exp/image_fp32.pte").is_file() and (tmp_path / "exp/text_fp32.pte").is_file()
        res = runner.invoke(main, ["eval", str(tmp_path / "exp"), "--splits", "eval", "--limit", "30", "--image-size",
                                   str(best.data.image_size), "--unseen-fraction", "0.2", "--out", str(tmp_path / "ev")])
        assert res.exit_code == 0, res.output
        assert "top-1" in res.output and (tmp_path / "ev/eval.json").is_file()


@pytest.mark.parametrize("override, expected", [
    ("search.budget.imag=3", "search.budget.imag: unknown key; did you mean 'image'?"),
    ("search.budget.image={reference: mobilevit_xx, factor: 1.0}", "did you mean 'mobilevit_xxs'"),
    ("search.budget.image={reference: mobilevit_xxs, factor: 0}", "search.budget.image"),
    ("search.threads=0", "search.threads:"),
    ("search.device=phone", "search.device:"),
    ("search.space.image.families=[vit, resnet]", "search.space.image.families"),
    ("search.proxy.eta=1", "search.proxy.eta:"),
    ("search.quant=[fp32]", "search.quant: must include int8"),
    ("students.image.arch=search", "search.budget.image: students.image.arch is 'search'"),
    ("students.image.arch=custom", "students.image.spec: arch 'custom' needs a spec"),
])
def test_bad_search_values_exit_2_with_one_line(tmp_path, override, expected):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")
    res = CliRunner().invoke(main, ["search", str(recipe), "--set", override])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_search_without_a_budget_is_a_user_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")
    res = CliRunner().invoke(main, ["search", str(recipe)])
    assert res.exit_code == 2 and "search.budget" in res.output


def test_budget_ms_is_read_as_budget():
    from compress.recipe.load import parse_recipe

    old = parse_recipe({"name": "r", "search": {"budget_ms": {"image": 0.33}}})
    assert old.search.budget.image == 0.33


def test_setting_search_threads_keeps_the_runtime_log_off_the_terminal():
    """Each threadpool reset makes the runtime print "[threadpool.cpp:66] Resetting threadpool ..." on fd 2. A child
    process, because pytest's own fd capture changes what the runtime's log reaches (it leaks there, not in a shell)."""
    import subprocess
    import sys

    code = ("from mobile_export.runtime import set_threadpool\n"
            "from executorch.extension.pybindings import portable_lib\n"
            "b = set_threadpool(1); set_threadpool(b); portable_lib._unsafe_reset_threadpool(b)  # the last one unguarded\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert err.count("[threadpool.cpp:") == 1, err  # only the unguarded reset reaches the terminal


def test_resumed_run_takes_the_winners_but_keeps_its_own_settings(searched, tmp_path):
    """`run --resume` reuses search/best.yaml for the winning towers only: a `--set` (here qat.lr) given on resume must
    not be replaced by the settings the search ran with."""
    import shutil

    from compress.pipeline.search import resolve_search

    folder, _ = searched
    run = tmp_path / "run"
    shutil.copytree(folder, run / "search")
    best = load_recipe(folder / "best.yaml")
    root = next(p for p in folder.parents if (p / "search.yaml").is_file())
    recipe = load_recipe(root / "search.yaml", ["qat.lr=0.123"])
    assert recipe.students.image.arch == "search" and best.qat.lr != 0.123
    resumed = resolve_search(recipe, run, resume=True, load=lambda: pytest.fail("a resumed search loads nothing"))
    assert resumed.qat.lr == 0.123
    assert resumed.students.image == best.students.image and resumed.data.image_size == best.data.image_size
    assert resumed.students.text == recipe.students.text  # not searched: as the recipe names it
