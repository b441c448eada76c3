"""Selection: a planted feature wins, variants S/A/P, P prefixes, the mean-difference baseline."""
import pytest
import torch

from corrsteer.pipeline.rank import Candidate, layer_candidates
from corrsteer.pipeline.select import mean_difference, p_prefixes, variant_a, variant_p, variant_s
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
