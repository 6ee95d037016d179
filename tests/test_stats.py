"""compress.eval.stats against hand-computed values."""
import math

import numpy as np
import pytest

from compress.eval import stats


def pairs(b: int, c: int, concordant: int = 0):
    """Correctness vectors with b items a-right/b-wrong, c items a-wrong/b-right, and some both-right items."""
    a = [1] * b + [0] * c + [1] * concordant
    bb = [0] * b + [1] * c + [1] * concordant
    return np.array(a), np.array(bb)


# --- McNemar ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "b, c, p",
    [
        (0, 5, 2 * (1 / 32)),  # 0.0625
        (1, 9, 2 * (1 + 10) / 1024),  # 0.021484375
        (5, 0, 0.0625),
        (4, 4, 1.0),
        (0, 0, 1.0),
        (0, 1, 1.0),  # 2 * 1/2 = 1
    ],
)
def test_mcnemar_hand_values(b, c, p):
    a, bb = pairs(b, c, concordant=3)
    r = stats.mcnemar(a, bb)
    assert (r["b"], r["c"]) == (b, c)
    assert r["p"] == p


def test_mcnemar_no_discordant_pairs():
    a = np.array([1, 0, 1, 0])
    assert stats.mcnemar(a, a) == {"b": 0, "c": 0, "p": 1.0}


def test_mcnemar_symmetric_and_bool_input():
    rng = np.random.default_rng(1)
    a = rng.random(200) < 0.6
    b = rng.random(200) < 0.7
    ab, ba = stats.mcnemar(a, b), stats.mcnemar(b, a)
    assert (ab["b"], ab["c"]) == (ba["c"], ba["b"])
    assert ab["p"] == ba["p"]


def test_mcnemar_large_n_exact():
    # 3000 discordant pairs: integer arithmetic must not overflow or underflow. b=1400, c=1600 is about 3.65 sd.
    a, b = pairs(1400, 1600)
    p = stats.mcnemar(a, b)["p"]
    assert 1e-4 < p < 1e-3
    a, b = pairs(0, 3000)
    assert stats.mcnemar(a, b)["p"] == 2.0 ** -2999


def test_mcnemar_rejects_mismatch():
    with pytest.raises(ValueError):
        stats.mcnemar([1, 0], [1, 0, 1])
    with pytest.raises(ValueError):
        stats.mcnemar([1, 2], [1, 0])


# --- mean_sd ----------------------------------------------------------------------------------------------------

def test_mean_sd():
    assert stats.mean_sd([1, 2, 3]) == (2.0, 1.0)
    assert stats.mean_sd([4.5]) == (4.5, 0.0)


# --- paired bootstrap -------------------------------------------------------------------------------------------

def test_bootstrap_identical_models():
    rng = np.random.default_rng(0)
    a = (rng.random(100) < 0.5).astype(int)
    r = stats.paired_bootstrap_ci(a, a, np.repeat(np.arange(10), 10), n_boot=500)
    assert r["diff"] == 0.0 and r["lo"] == 0.0 and r["hi"] == 0.0
    assert (r["n_items"], r["n_clusters"], r["n_boot"]) == (100, 10, 500)


def test_bootstrap_b_always_right_a_never():
    a, b = np.zeros(60, int), np.ones(60, int)
    clusters = np.arange(60) % 7  # unequal cluster sizes
    r = stats.paired_bootstrap_ci(a, b, clusters, n_boot=500)
    assert r["diff"] == 100.0 and r["lo"] == 100.0 and r["hi"] == 100.0


def test_bootstrap_b_better_on_every_cluster():
    # 20 classes of 6 images; in each class b gets one more image right than a, otherwise random agreement.
    rng = np.random.default_rng(3)
    a, b, cl = [], [], []
    for k in range(20):
        x = (rng.random(6) < 0.5).astype(int)
        y = x.copy()
        wrong = np.flatnonzero(x == 0)
        if wrong.size == 0:
            x[0], wrong = 0, np.array([0])
        y[wrong[0]] = 1
        a += list(x)
        b += list(y)
        cl += [k] * 6
    r = stats.paired_bootstrap_ci(a, b, cl)
    assert r["diff"] == pytest.approx(100 * 20 / 120)
    assert 0 < r["lo"] <= r["diff"] <= r["hi"]


def test_bootstrap_deterministic_for_seed():
    rng = np.random.default_rng(5)
    a = (rng.random(300) < 0.6).astype(int)
    b = (rng.random(300) < 0.65).astype(int)
    cl = rng.integers(0, 40, 300)
    r1 = stats.paired_bootstrap_ci(a, b, cl, n_boot=2000, seed=7)
    r2 = stats.paired_bootstrap_ci(a, b, cl, n_boot=2000, seed=7)
    r3 = stats.paired_bootstrap_ci(a, b, cl, n_boot=2000, seed=8)
    assert r1 == r2
    assert (r1["lo"], r1["hi"]) != (r3["lo"], r3["hi"])
    assert r1["diff"] == r3["diff"]


def test_bootstrap_chunking_does_not_change_result(monkeypatch):
    rng = np.random.default_rng(6)
    a = (rng.random(200) < 0.5).astype(int)
    b = (rng.random(200) < 0.6).astype(int)
    cl = rng.integers(0, 50, 200)
    whole = stats.paired_bootstrap_ci(a, b, cl, n_boot=1000, seed=1)
    monkeypatch.setattr(stats, "_CHUNK_ELEMS", 50 * 37)  # 37 resamples per chunk, last chunk partial
    assert stats.paired_bootstrap_ci(a, b, cl, n_boot=1000, seed=1) == whole


def test_bootstrap_clustering_widens_interval():
    # 10 classes of 10 images, both models right everywhere except class 0, where only b is right: all the
    # difference sits in one class, so how often that class is drawn dominates the clustered interval.
    a = np.ones(100, int)
    a[:10] = 0
    b = np.ones(100, int)
    by_class = stats.paired_bootstrap_ci(a, b, np.repeat(np.arange(10), 10), seed=0)
    by_item = stats.paired_bootstrap_ci(a, b, np.arange(100), seed=0)
    assert by_class["diff"] == by_item["diff"] == 10.0
    assert by_class["hi"] - by_class["lo"] > 1.5 * (by_item["hi"] - by_item["lo"])


def test_bootstrap_size_of_real_eval_is_fast():
    import time

    rng = np.random.default_rng(0)
    a = (rng.random(1148) < 0.5).astype(int)
    b = (rng.random(1148) < 0.55).astype(int)
    t0 = time.perf_counter()
    r = stats.paired_bootstrap_ci(a, b, np.arange(1148), n_boot=10000)
    assert time.perf_counter() - t0 < 10.0  # generous: typically well under a second, but the CI box is shared
    assert r["lo"] < r["diff"] < r["hi"] and r["n_clusters"] == 1148


# --- paired seed interval ---------------------------------------------------------------------------------------

def test_seed_ci_constant_diffs():
    r = stats.paired_seed_ci([1, 1, 1])
    assert (r["boot_lo"], r["boot_hi"]) == (1.0, 1.0)
    assert (r["t_lo"], r["t_hi"]) == (1.0, 1.0)
    assert r["quote"] == "t"


def test_seed_ci_t_interval():
    r = stats.paired_seed_ci([1, 2, 3])
    half = 4.303 * 1 / math.sqrt(3)
    assert r["mean"] == 2.0 and r["sd"] == 1.0
    assert r["t"] == pytest.approx(4.303, abs=1e-3)
    assert r["t_lo"] == pytest.approx(2 - half, abs=1e-3)
    assert r["t_hi"] == pytest.approx(2 + half, abs=1e-3)
    assert 1.0 <= r["boot_lo"] <= r["boot_hi"] <= 3.0
    assert r["t_hi"] - r["t_lo"] > r["boot_hi"] - r["boot_lo"]  # why the docs quote t for few seeds


def test_seed_ci_quote_and_single_seed():
    assert stats.paired_seed_ci([0.1, 0.3, 0.2, 0.5, 0.4, 0.0])["quote"] == "bootstrap"
    one = stats.paired_seed_ci([0.7])
    assert one["mean"] == 0.7 and one["sd"] == 0.0 and math.isnan(one["t_lo"])


@pytest.mark.parametrize(
    "df, t975",
    # Standard table values of t(0.975, df).
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (9, 2.262), (10, 2.228), (29, 2.045), (30, 2.042),
     (120, 1.980)],
)
def test_t_quantile_table(df, t975):
    assert stats.t_quantile(0.975, df) == pytest.approx(t975, abs=1e-3)


def test_t_quantile_matches_scipy():
    sps = pytest.importorskip("scipy.stats")
    for df in range(1, 41):
        for p in (0.9, 0.95, 0.975, 0.995):
            assert stats.t_quantile(p, df) == pytest.approx(sps.t.ppf(p, df), rel=1e-9)
