"""Zero-shot and retrieval metrics as small pure functions on score matrices.

Tie rule (everywhere): candidates are ranked by score, highest first, and exactly equal scores are ordered by
candidate index, lowest first, i.e. a stable descending sort. The rank of a target is therefore
``#{score > s_t} + #{score == s_t and index < t}`` (0-based), computed by counting, so it does not depend on how
`torch.topk` happens to order ties on a given device. Top-1 under this rule is `argmax` (first maximum), which is
what ELEVATER's numpy/sklearn metrics use.

The ELEVATER protocol (vision_benchmark/evaluation/metric.py) scores with ``softmax(100 * cos)``. Top-k and
mean-per-class only look at per-row order, which the softmax keeps, so they use raw cosines (no float32 saturation
ties). 11-point mAP and ROC AUC compare one class column across images, where the softmax changes the order, so they
take the softmax probabilities like ELEVATER does.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

ELEVATER_LOGIT_SCALE = 100.0


def _ranks(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """0-based rank of column cols[i] within row rows[i], under the tie rule above (by counting)."""
    s_t = rows.gather(1, cols[:, None])
    idx = torch.arange(rows.shape[1], device=rows.device)[None, :]
    return (rows > s_t).sum(1) + ((rows == s_t) & (idx < cols[:, None])).sum(1)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of targets[i] among the columns of row i of scores (N, C)."""
    return _ranks(scores, targets)


def best_positive_ranks(scores: torch.Tensor, positives: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Per row: the best (lowest) rank of any positive column. positives is bool (N, C); a row without positives
    gets rank C (never a hit)."""
    n, c = scores.shape
    out = torch.full((n,), c, dtype=torch.long)
    for start in range(0, n, chunk):
        rows, cols = positives[start : start + chunk].nonzero(as_tuple=True)  # one entry per positive pair
        if len(rows):
            ranks = _ranks(scores[start : start + chunk][rows], cols)
            out[start : start + chunk].scatter_reduce_(0, rows, ranks, reduce="amin")
    return out


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    ranks = target_ranks(scores, targets)
    return {f"top{k}": int((ranks < k).sum()) / len(ranks) for k in ks}


def mean_per_class_accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over the classes present in targets of their top-1 recall (sklearn's balanced accuracy, as ELEVATER)."""
    hit = target_ranks(scores, targets) == 0
    per_class = [int(hit[targets == c].sum()) / int((targets == c).sum()) for c in targets.unique()]
    return math.fsum(per_class) / len(per_class)


def elevater_probs(cosines: torch.Tensor) -> torch.Tensor:
    return (ELEVATER_LOGIT_SCALE * cosines.double()).softmax(dim=-1)


def average_precision_n_points(scores: torch.Tensor, labels: torch.Tensor, n_points: int = 11) -> float:
    """N-point interpolated AP of one class: at each recall level r in linspace(1, 0, n), the best precision among
    the operating points (one per distinct score threshold, plus (recall 0, precision 1)) with recall >= r.

    Matches vision_evaluation's MeanAveragePrecisionNPointsEvaluator over sklearn's precision_recall_curve."""
    labels = labels.bool()
    positives = int(labels.sum())
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order].long()
    tp, fp = torch.cumsum(y, 0), torch.cumsum(1 - y, 0)
    # One operating point per distinct threshold: the last position of each run of equal scores.
    last = torch.ones(len(s), dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    tp, fp = tp[last].double(), fp[last].double()
    precision = torch.cat([tp / (tp + fp), torch.ones(1, dtype=torch.float64)])
    recall = torch.cat([tp / positives, torch.zeros(1, dtype=torch.float64)])
    levels = torch.linspace(1, 0, n_points, dtype=torch.float64)
    interp = [float(precision[recall >= r - 1e-12].max()) for r in levels]
    return math.fsum(interp) / n_points


def mean_average_precision_n_points(probs: torch.Tensor, multi_hot: torch.Tensor, n_points: int = 11) -> float:
    """Mean of per-class N-point AP over classes with at least one positive (a class without positives has no
    defined recall; ELEVATER's VOC test set has positives for every class)."""
    aps = [average_precision_n_points(probs[:, c], multi_hot[:, c], n_points)
           for c in range(probs.shape[1]) if bool(multi_hot[:, c].any())]
    return math.fsum(aps) / len(aps)


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Binary ROC AUC = P(score of a random positive > score of a random negative), ties counting 1/2
    (the trapezoidal area sklearn's roc_auc_score computes)."""
    labels = labels.bool()
    pos, neg = scores[labels].double(), scores[~labels].double()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("ROC AUC needs both positive and negative samples")
    # Rank-sum (Mann-Whitney U) with average ranks for ties; O(N log N).
    allv = torch.cat([pos, neg])
    sorted_v, order = torch.sort(allv, stable=True)
    ranks = torch.empty_like(allv)
    uniq, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg_rank = ends - (counts.double() - 1) / 2  # 1-based average rank of each tie group
    ranks[order] = avg_rank[inverse]
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def retrieval_recalls(sims: torch.Tensor, positives: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Image->text and text->image recall@k on a similarity matrix (N_images, N_texts) with a bool matrix of
    matching pairs of the same shape. A query is a hit at k when any of its positives ranks < k; `mean_recall` is the
    mean of all 2 * len(ks) recalls (the number Flickr30k-CN / COCO-CN tables report). Queries without any positive
    (an image with no caption in this language) are left out of the mean; they stay in the gallery."""
    has_i, has_t = positives.any(1), positives.any(0)
    i2t = best_positive_ranks(sims[has_i], positives[has_i])
    t2i = best_positive_ranks(sims.t()[has_t].contiguous(), positives.t()[has_t].contiguous())
    out = {f"i2t_R@{k}": int((i2t < k).sum()) / len(i2t) for k in ks}
    out |= {f"t2i_R@{k}": int((t2i < k).sum()) / len(t2i) for k in ks}
    out["mean_recall"] = math.fsum(out.values()) / len(out)
    return out
