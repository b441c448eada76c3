"""The per-batch statistics: per-class and shuffled-outcome sums equal a float64 recomputation, the permutation is
fixed by seed and batch, and pearson takes the fused path."""
import pytest
import torch
from cases import make_sae

from corrsteer.method.statistics import batch_groups, layer_stats, permuted_scores
from corrsteer_kernels import CorrStats, RankStats, encode_pool_reference


# ---------------------------------------------------------------------------------------------------------------
# per-class and shuffled-outcome statistics
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ranking", ["within-class", "pearson", "mi"])
def test_per_class_and_shuffled_sums_equal_float64_reference(ranking):
    seed = int(torch.randint(1 << 30, (1,)))                  # fresh inputs every run
    g = torch.Generator().manual_seed(seed)
    B, T, d, d_sae = 10, 7, 16, 24
    lengths = [0, 1, 7, 3, 1, 5, 0, 2, 6, 4]                 # ragged, with empty and one-token samples
    cls = [0, 1, 1, 0, 2, 0, 1, 0, 1, 0]                     # class 2 has one sample
    y = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    h = torch.randn(B, T, d, generator=g)                    # values past each length must be ignored
    sae = make_sae(g, d, d_sae, "relu")
    sae.W_enc.mul_(3.0)
    y_perm = permuted_scores(y, seed=seed % 7, batch=3, cls=cls)
    for c in range(3):                                       # permuted within each class
        assert sorted(p for p, k in zip(y_perm, cls) if k == c) == sorted(v for v, k in zip(y, cls) if k == c)
    total, per_class, shuffled, shuffled_class = layer_stats(h, lengths, torch.tensor(y, dtype=torch.float64), y_perm,
                                                             cls, 3, sae, "max", ranking)
    pooled = encode_pool_reference(h, torch.tensor(lengths), sae, "max")     # float64
    yt = torch.tensor(y, dtype=torch.float64)

    def close(got, want):
        torch.testing.assert_close(got.sums_at(want.shift), want.features, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(got.scalars, want.scalars, rtol=0, atol=0)

    close(total, CorrStats(d_sae).update(pooled, yt))
    assert len(per_class) == 3
    for c in range(3):
        rows = torch.tensor([b for b in range(B) if cls[b] == c])
        close(per_class[c], CorrStats(d_sae).update(pooled[rows], yt[rows]))
        close(shuffled_class[c], CorrStats(d_sae).update(pooled[rows], torch.tensor(y_perm, dtype=torch.float64)[rows]))
    close(shuffled, CorrStats(d_sae).update(pooled, torch.tensor(y_perm, dtype=torch.float64)))


def test_permutation_is_fixed_by_seed_and_batch():
    y = [float(i % 3 == 0) for i in range(16)]
    assert permuted_scores(y, 0, 4) == permuted_scores(y, 0, 4)
    assert permuted_scores(y, 0, 4) != permuted_scores(y, 0, 5) or permuted_scores(y, 1, 4) != permuted_scores(y, 0, 4)
    cls = [i % 2 for i in range(16)]
    moved = [permuted_scores(y, s, 4, cls) for s in range(20)]
    assert all([v for v, k in zip(m, cls) if k == c] != [] for m in moved for c in (0, 1))
    assert all(sorted(v for v, k in zip(m, cls) if k == c) == sorted(v for v, k in zip(y, cls) if k == c)
               for m in moved for c in (0, 1))
    assert any(m != y for m in moved)
    assert batch_groups([1, 0, 1, 0], [1.0, 1.0, 0.0, 1.0]) == [(0, 1.0, [1, 3]), (1, 0.0, [2]), (1, 1.0, [0])]


def test_pearson_takes_the_fused_path_and_other_rankings_rank_stats():
    g = torch.Generator().manual_seed(2)
    sae = make_sae(g, 16, 24, "relu")
    x, lengths, y = torch.randn(4, 3, 16, generator=g), [3, 2, 3, 1], torch.tensor([1.0, 0, 1, 0], dtype=torch.float64)
    fused, _, _, _ = layer_stats(x, lengths, y, [1.0, 0, 0, 1], [0] * 4, 0, sae, "max", "pearson")
    ranked, _, _, _ = layer_stats(x, lengths, y, [1.0, 0, 0, 1], [0] * 4, 0, sae, "max", "caa")
    assert type(fused) is CorrStats and isinstance(ranked, RankStats)
    torch.testing.assert_close(fused.sums_at(ranked.shift), ranked.features, rtol=1e-6, atol=1e-6)
