"""Selection: a planted feature wins, variants S/A/P/N, P prefixes, the mean-difference baseline, the random-feature
control."""
import pytest
import torch
from cases import make_sae

from corrsteer.method.rank import Candidate, layer_candidates
from corrsteer.method.variants import (
    mean_difference,
    p_prefixes,
    random_feature_picks,
    variant_a,
    variant_n,
    variant_p,
    variant_s,
)
from corrsteer.model.hooks import HookPoint
from corrsteer.model.steer import SteeringPlan
from corrsteer.sae.bank import BankEntry, SAEBank
from corrsteer_kernels import CorrStats


def test_planted_feature_is_selected():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(200, generator=g) > 0.5).float()
    stats = {}
    for L in range(4):
        z = torch.rand(200, 50, generator=g)
        if L == 2:
            z[:, 17] = 2.0 * y + 0.3 * torch.rand(200, generator=g)   # the planted feature decides correctness
        stats[L] = CorrStats(50).update(z, y)
    cands = layer_candidates(stats)
    s = variant_s(cands)
    assert s[0].layer == 2 and s[0].feature == 17 and s[0].r > 0.9
    assert s[0].coef == pytest.approx(float(stats[2].mean_given_positive()[17]))
    assert [p.layer for p in variant_a(cands)] == [0, 1, 2, 3]
    kept = variant_p(cands, {0: 0.5, 1: 0.7, 2: 0.8, 3: 0.6}, base_acc=0.6)
    assert [p.layer for p in kept] == [1, 2] and [p.val_acc for p in kept] == [0.7, 0.8]


def test_mean_difference_is_the_difference_of_class_means():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(30, 8, generator=g)
    y = torch.tensor([1.0, 0.0] * 15)
    md = mean_difference({0: CorrStats(8).update(z, y)}, 0)
    torch.testing.assert_close(md, (z[y > 0].mean(0) - z[y == 0].mean(0)).float(), rtol=1e-5, atol=1e-6)


def test_p_prefixes_rank_by_validation_accuracy():
    kept = [Candidate(layer=L, feature=0, r=0.1, score=0.1, freq=0.5, coef=1.0, val_acc=a)
            for L, a in ((1, 0.6), (4, 0.8), (9, 0.7))]
    pre = p_prefixes(kept)
    assert [[p.layer for p in x] for x in pre] == [[4], [4, 9], [4, 9, 1]]


def _bank(d_in=12, d_sae=60, layers=(2, 5)):
    g = torch.Generator().manual_seed(3)
    return SAEBank({L: BankEntry(make_sae(g, d_in, d_sae, "relu"), HookPoint(L, "post"), f"r{L}") for L in layers},
                   "m")


def test_random_feature_control_keeps_layers_and_vector_norms():
    bank = _bank()
    picks = [Candidate(layer=2, feature=7, r=0.4, score=0.4, freq=0.5, coef=1.7),
             Candidate(layer=5, feature=30, r=0.3, score=0.3, freq=0.5, coef=0.4)]
    plan = SteeringPlan.from_features("CorrSteer-P", "m", "s", bank, picks)
    stats = {L: CorrStats(60).update(torch.rand(8, 60), torch.tensor([1.0, 0.0] * 4)) for L in (2, 5)}
    ctrl = random_feature_picks(plan, bank, seed=11, stats=stats)
    assert [p.layer for p in ctrl] == [2, 5] and [p.feature for p in ctrl] != [7, 30]
    assert all(p.feature != q.feature for p, q in zip(ctrl, picks))
    assert ctrl == random_feature_picks(plan, bank, seed=11, stats=stats)              # seeded
    assert ctrl[0].r == pytest.approx(float(stats[2].pearson()[ctrl[0].feature]))
    rand_plan = SteeringPlan.from_features("control", "m", "s", bank, ctrl)
    for hook, v in plan.vectors.items():
        assert torch.tensor(rand_plan.vectors[hook]).norm() == pytest.approx(float(torch.tensor(v).norm()), rel=1e-5)
    other = [random_feature_picks(plan, bank, seed=s) for s in range(12, 16)]
    assert any([p.feature for p in o] != [p.feature for p in ctrl] for o in other)


def test_variant_n_in_layer_order():
    c = {L: Candidate(layer=L, feature=1, r=-0.3, score=-0.3, freq=0.2, coef=-1.0) for L in (9, 2, 4)}
    assert [p.layer for p in variant_n(c)] == [2, 4, 9]
