import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.data.pairs import PairSet
from compress.train.data import EpochPlan
from compress.train.losses import ClipLoss, FeatureDistillLoss, MarginRegularizer, standardize


def test_clip_loss_is_symmetric_and_low_for_matched_pairs():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    scale = torch.tensor(math.log(100.0))
    crit = ClipLoss()
    assert crit(x, x, scale) < 0.01
    y = torch.randn(8, 16)
    assert torch.allclose(crit(x, y, scale), crit(y, x, scale), atol=1e-6)
    assert crit(x, y, scale) > 1.0


def test_clip_loss_at_uniform_logits_is_log_batch():
    x = torch.ones(6, 4)
    assert abs(ClipLoss()(x, x, torch.tensor(0.0)).item() - math.log(6)) < 1e-5


def test_margin_regularizer_is_one_sided():
    x = torch.randn(5, 8)
    reg = MarginRegularizer(margin=0.5)
    assert reg(x, x).item() == 0.0  # positives at cosine 1 are past the margin: no push
    assert abs(reg(x, -x).item() - 1.5) < 1e-5  # cosine -1 is 1.5 below the margin
    a = torch.randn(5, 8, requires_grad=True)
    reg(a, a.detach()).backward()
    assert a.grad.abs().sum() == 0


def test_feature_distill_resizes_student_maps_and_standardizes_teacher():
    s = torch.randn(2, 4, 2, 2, requires_grad=True)
    t = torch.randn(2, 4, 4, 4) * 50 + 10
    loss = FeatureDistillLoss()(s, t)
    loss.backward()
    assert loss.item() > 0 and s.grad is not None
    z = standardize(t)
    assert torch.allclose(z.mean(1), torch.zeros(2, 4, 4), atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(groups=st.lists(st.integers(0, 12), min_size=2, max_size=60), batch=st.integers(2, 9), seed=st.integers(0, 99),
       epoch=st.integers(0, 5))
def test_batches_never_repeat_a_group_and_are_a_pure_function_of_seed_and_epoch(groups, batch, seed, epoch):
    n_groups = max(groups) + 1
    pairs = PairSet(torch.zeros(len(groups), 3, 2, 2, dtype=torch.uint8), torch.tensor(groups), ["a"] * n_groups, ["甲"] * n_groups)
    plan = EpochPlan(pairs, batch, seed)
    batches = plan.plan(epoch)
    seen = []
    for keys in batches:
        gs = [groups[i] for i, _ in keys]
        assert len(keys) == batch and len(set(gs)) == len(gs)  # full batches of distinct groups
        seen += gs
    present = set(groups)
    assert set(seen) <= present and len(seen) == len(present) // batch * batch  # only the ragged tail is left out
    assert EpochPlan(pairs, batch, seed).plan(epoch) == batches  # a fresh sampler replays the epoch exactly
    plan.epoch, plan.start = epoch, min(1, len(batches))
    assert list(plan) == batches[plan.start :]  # resuming mid-epoch skips exactly the batches already done


def test_logit_distill_is_zero_when_student_matches_teacher_and_positive_otherwise():
    from compress.train.losses import LogitDistillLoss

    torch.manual_seed(0)
    img, txt = torch.randn(6, 8), torch.randn(6, 8)
    crit = LogitDistillLoss()
    scale = torch.tensor(math.log(20.0))
    assert crit(img, txt, scale, img * 3, txt * 2, 20.0).item() < 1e-5  # same directions, same temperature
    assert crit(img, txt, scale, torch.randn(6, 8), torch.randn(6, 8), 20.0).item() > 0.01


def test_embedding_distill_ignores_norm_and_grows_with_angle():
    from compress.train.losses import EmbeddingDistillLoss

    torch.manual_seed(0)
    x = torch.randn(5, 8)
    crit = EmbeddingDistillLoss()
    assert crit(x, 3 * x).item() < 1e-6
    assert abs(crit(x, -x).item() - 2.0) < 1e-5
    assert 0 < crit(x, x + 0.1 * torch.randn(5, 8)).item() < crit(x, x + torch.randn(5, 8)).item()
