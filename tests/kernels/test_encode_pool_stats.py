"""The fused encode -> pool -> statistics op against stats.update(reference pooled values)."""
import pytest
import torch
from cases import make_case
from conftest import FAST_BACKENDS, on_backend

from corrsteer_kernels import CorrStats, encode_pool, encode_pool_reference, encode_pool_stats
from corrsteer_kernels.corr_stats import FEATURE_FIELDS

LENGTHS = [0, 1, 23, 9, 14, 3, 23]


def scores(kind, B, seed):
    gen = torch.Generator().manual_seed(seed)
    if kind == "binary":
        y = (torch.rand(B, generator=gen) > 0.5).float()
        y[0], y[1] = 1.0, 0.0                                  # both classes present
        return y
    return torch.randn(B, generator=gen)                        # real-valued rewards, some negative


def assert_stats_close(got: CorrStats, want: CorrStats, scale):
    assert torch.isfinite(got.features).all() and torch.isfinite(got.scalars).all()
    torch.testing.assert_close(got.scalars, want.scalars, rtol=1e-12, atol=1e-12)
    feats = got.sums_at(want.shift)                    # the sums relative to want's shift
    for i, name in enumerate(FEATURE_FIELDS):
        if name.startswith("n_"):   # counts are exact: every decision is MARGIN clear of its threshold
            assert torch.equal(feats[i], want.features[i]), name
        else:
            torch.testing.assert_close(feats[i], want.features[i], rtol=1e-5, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("backend", ["reference"] + FAST_BACKENDS)
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("pool", ["max", "mean"])
@pytest.mark.parametrize("ykind", ["binary", "real"])
def test_fused_matches_reference_over_batches(backend, activation, pool, ykind):
    d_sae = 83
    x, L, sae = make_case(20, 14, 23, 29, d_sae, activation, lengths=LENGTHS + LENGTHS[::-1], dtype=torch.float16)
    y = scores(ykind, 14, 1)
    ref = encode_pool_reference(x, L, sae, pool)
    want, got = CorrStats(d_sae), CorrStats(d_sae)
    x, L, y, sae = on_backend(backend, x, L, y, sae)
    for rows in (slice(0, 7), slice(7, 14)):                    # streaming: two batches accumulate
        want.update(ref[rows], y[rows])
        encode_pool_stats(x[rows], L[rows], y[rows], sae, got, pool, backend=backend)
    assert_stats_close(got, want, scale=float(ref.abs().max()) * 7)
    assert want.n_active.sum() > 0 and (want.n_active < 14).any()   # the data exercises both branches
    torch.testing.assert_close(got.pearson(), want.pearson(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_fused_equals_unfused_same_backend(backend):
    x, L, sae = make_case(31, 6, 12, 24, 77, "jumprelu", lengths=[12, 0, 1, 5, 7, 12], dtype=torch.bfloat16)
    x, L, y, sae = on_backend(backend, x, L, scores("binary", 6, 3), sae)
    a = CorrStats(77).update(encode_pool(x, L, sae, "max", backend=backend), y)
    b = encode_pool_stats(x, L, y, sae, CorrStats(77), "max", backend=backend)
    # both fused paths sum a block of samples in fp32 before the float64 accumulators (H200: 1.2e-7; CPU: 1.3e-7)
    torch.testing.assert_close(b.sums_at(a.shift), a.features, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b.scalars, a.scalars, rtol=0, atol=0)


def test_fused_wide_dictionary_torch_path():
    x, L, sae = make_case(32, 3, 4, 8, 300_001, "relu", lengths=[4, 1, 0], need_margin=False)
    y = torch.tensor([1.0, 0.0, 1.0])
    got = encode_pool_stats(x, L, y, sae, CorrStats(300_001), "max", backend="torch")
    want = CorrStats(300_001).update(encode_pool_reference(x, L, sae, "max"), y)
    for i, name in enumerate(FEATURE_FIELDS):
        if not name.startswith("n_"):
            torch.testing.assert_close(got.sums_at(want.shift)[i], want.features[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference"] + FAST_BACKENDS)
def test_fused_bad_inputs(backend):
    x, L, sae = on_backend(backend, *make_case(33, 3, 5, 12, 30, "relu", lengths=[5, 2, 0]))
    stats = CorrStats(30)
    with pytest.raises(ValueError, match="non-finite"):
        encode_pool_stats(x, L, torch.tensor([1.0, float("nan"), 0.0]), sae, stats, backend=backend)
    with pytest.raises(ValueError, match="y must have shape"):
        encode_pool_stats(x, L, torch.tensor([1.0, 0.0]), sae, stats, backend=backend)
    with pytest.raises(ValueError, match="CorrStats"):
        encode_pool_stats(x, L, torch.ones(3), sae, CorrStats(31), backend=backend)
    bad = x.clone()
    bad[0, 0, 0] = float("-inf")
    with pytest.raises(ValueError, match="non-finite"):
        encode_pool_stats(bad, L, torch.ones(3), sae, stats, backend=backend)
    assert stats.scalars.abs().sum() == 0 and stats.features.abs().sum() == 0   # failed calls change nothing


def test_empty_batch_is_a_no_op():
    x, L, sae = make_case(34, 2, 5, 12, 30, "relu", lengths=[5, 2])
    stats = encode_pool_stats(x[:0], L[:0], torch.ones(0), sae, CorrStats(30), backend="torch")
    assert stats.scalars.abs().sum() == 0
