"""Every eval metric against a brute-force reference written the slow, obvious way (Python loops and sorts).

Scores are drawn from a small integer grid so exact ties are common: the tie rule is part of what is checked.
"""
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.eval import metrics


def stable_order(row):
    """Documented rule: highest score first, equal scores by index, lowest first."""
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


def ref_topk(scores, targets, k):
    return sum(targets[i] in stable_order(scores[i])[:k] for i in range(len(scores))) / len(scores)


def ref_mean_per_class(scores, targets):
    per = {}
    for i, t in enumerate(targets):
        per.setdefault(t, []).append(stable_order(scores[i])[0] == t)
    return math.fsum(sum(v) / len(v) for v in per.values()) / len(per)


def ref_ap11(scores, labels):
    """Every distinct threshold as an operating point (predict positive if score >= thr), plus (recall 0, prec 1)."""
    pos = sum(labels)
    points = [(0.0, 1.0)]
    for thr in set(scores):
        tp = sum(1 for s, y in zip(scores, labels) if s >= thr and y)
        fp = sum(1 for s, y in zip(scores, labels) if s >= thr and not y)
        points.append((tp / pos, tp / (tp + fp)))
    levels = [1 - i / 10 for i in range(11)]
    return math.fsum(max(p for r, p in points if r >= lvl - 1e-12) for lvl in levels) / 11


def ref_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def ref_recalls(sims, pos, ks=(1, 5, 10)):
    n_img, n_txt = len(sims), len(sims[0])
    out = {}
    for k in ks:
        q = [i for i in range(n_img) if any(pos[i])]
        out[f"i2t_R@{k}"] = sum(any(pos[i][j] for j in stable_order(sims[i])[:k]) for i in q) / len(q)
    for k in ks:
        cols = [[sims[i][j] for i in range(n_img)] for j in range(n_txt)]
        q = [j for j in range(n_txt) if any(pos[i][j] for i in range(n_img))]
        out[f"t2i_R@{k}"] = sum(any(pos[i][j] for i in stable_order(cols[j])[:k]) for j in q) / len(q)
    out["mean_recall"] = math.fsum(out.values()) / len(out)
    return out


grid = st.integers(min_value=0, max_value=4)


@st.composite
def scored_targets(draw, min_classes=2):
    n = draw(st.integers(1, 12))
    c = draw(st.integers(min_classes, 7))
    scores = [[draw(grid) for _ in range(c)] for _ in range(n)]
    targets = [draw(st.integers(0, c - 1)) for _ in range(n)]
    return scores, targets


@settings(max_examples=150, deadline=None)
@given(scored_targets())
def test_topk_and_mean_per_class_match_brute_force_with_ties(case):
    scores, targets = case
    s, t = torch.tensor(scores, dtype=torch.float32), torch.tensor(targets)
    got = metrics.topk_accuracy(s, t, (1, 2, 5))
    for k in (1, 2, 5):
        assert got[f"top{k}"] == ref_topk(scores, targets, k)  # exact: both are hits / n
    assert metrics.mean_per_class_accuracy(s, t) == ref_mean_per_class(scores, targets)


def test_tie_rule_lower_index_wins():
    s = torch.tensor([[0.5, 0.9, 0.9, 0.9]])
    assert metrics.target_ranks(s, torch.tensor([1])).item() == 0
    assert metrics.target_ranks(s, torch.tensor([3])).item() == 2
    assert metrics.target_ranks(s, torch.tensor([0])).item() == 3
    assert metrics.topk_accuracy(s, torch.tensor([3]), (1, 2, 3)) == {"top1": 0.0, "top2": 0.0, "top3": 1.0}


def test_mean_per_class_on_an_imbalanced_set():
    # class 0: 8 samples, all right; class 1: 2 samples, 1 right; class 2: 1 sample, wrong.
    targets = [0] * 8 + [1, 1] + [2]
    preds = [0] * 8 + [1, 0] + [1]
    scores = torch.nn.functional.one_hot(torch.tensor(preds), 3).float()
    t = torch.tensor(targets)
    assert metrics.mean_per_class_accuracy(scores, t) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert metrics.topk_accuracy(scores, t, (1,))["top1"] == pytest.approx(9 / 11)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(grid, st.booleans()), min_size=2, max_size=20))
def test_ap11_and_auc_match_brute_force(rows):
    scores = [float(s) for s, _ in rows]
    labels = [y for _, y in rows]
    s, y = torch.tensor(scores, dtype=torch.float64), torch.tensor(labels)
    if any(labels):
        assert metrics.average_precision_n_points(s, y) == ref_ap11(scores, labels)
    if any(labels) and not all(labels):
        assert metrics.roc_auc(s, y) == ref_auc(scores, labels)


def test_map_skips_classes_without_positives_and_perfect_scores_give_one():
    hot = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=torch.bool)
    assert metrics.mean_average_precision_n_points(hot.double(), hot) == pytest.approx(1.0)


@st.composite
def retrieval_case(draw):
    n_img = draw(st.integers(1, 6))
    n_txt = draw(st.integers(1, 12))
    owner = [draw(st.integers(0, n_img - 1)) for _ in range(n_txt)]
    sims = [[draw(grid) for _ in range(n_txt)] for _ in range(n_img)]
    return sims, owner


@settings(max_examples=150, deadline=None)
@given(retrieval_case())
def test_retrieval_recalls_match_brute_force(case):
    sims, owner = case
    pos = [[owner[j] == i for j in range(len(owner))] for i in range(len(sims))]
    got = metrics.retrieval_recalls(torch.tensor(sims, dtype=torch.float32), torch.tensor(pos))
    want = ref_recalls(sims, pos)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key
