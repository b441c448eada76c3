"""torch_path (the CPU path) directly: its blocks, masks and statistics fold against float64 specs, on fresh random
inputs of odd sizes with empty and length-1 samples, into poisoned outputs, and bitwise repeatable."""
import importlib
import os

import pytest
import torch
from cases import make_case

from corrsteer_kernels import CorrStats, encode_pool, encode_pool_reference, encode_pool_stats, pack_tokens
from corrsteer_kernels.corr_stats import feature_sums
from corrsteer_kernels.torch_path import TopKRows, active_mask, fold_block, pooled_blocks_torch, sample_groups

tp = importlib.import_module("corrsteer_kernels.torch_path")

LENGTHS = [0, 1, 9, 0, 1, 1, 17, 2, 0, 5, 1]        # empty, one-token runs, a long one, empty last-but-one


def test_active_mask_is_float_and_strict():
    z = torch.tensor([[0.0, -0.0, 1e-30, -1.0], [0.5, 0.2, 0.2, float("-inf")]])
    thr = torch.tensor([0.0, 0.0, 0.0, 0.2])
    m = active_mask(z, thr)
    assert m.dtype == torch.float32
    assert m.tolist() == [[0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]]


@pytest.mark.parametrize("rows", [1, 7, 1030])
def test_fold_block_equals_float64_sums(monkeypatch, rows):
    """fp32 block sums (FOLD_ROWS samples at a time) = feature_sums in float64, counts exactly."""
    monkeypatch.setattr(tp, "FOLD_ROWS", 100)
    g = torch.Generator().manual_seed(rows)
    z = torch.randn(rows, 37, generator=g).clamp(min=0)
    y = torch.randn(rows, generator=g).double()
    c = z.mean(0).double()                            # a shift (fp32-representable)
    got, want = fold_block(z, None, y, c), feature_sums(z, y, c)
    assert torch.equal(got[4:6], want[4:6])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * max(1, rows / 100))
    assert torch.equal(fold_block(z, active_mask(z, 0.0), y, c), got)


def test_sample_groups_bound_and_cover():
    groups = sample_groups(LENGTHS, 10)
    assert [b for g in groups for b in range(g[0], g[1])] == list(range(len(LENGTHS)))
    for b0, b1, t0, t1 in groups:
        assert t1 - t0 == sum(LENGTHS[b0:b1]) and (t1 - t0 <= 10 or b1 - b0 == 1)


def _pooled(xp, L, sae, pool):
    """encode_pool's torch path through pooled_blocks_torch into a NaN-poisoned output; masks checked on the way."""
    out = torch.full((L.shape[0], sae.d_sae), float("nan"))

    def sink(rows, cols, pooled, mask):
        if isinstance(pooled, TopKRows):
            assert mask is None and cols == slice(0, sae.d_sae)
            pooled = pooled.dense(sae.d_sae)
        if mask is not None:
            assert torch.equal(mask, (pooled > 0).float())
        out[rows, cols] = pooled
    pooled_blocks_torch(xp, L, sae, pool, sink)
    return out


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("pool", ["max", "mean"])
@pytest.mark.parametrize("tiles", [None, (7, 7 * 4)])
def test_blocks_match_reference(monkeypatch, activation, pool, tiles):
    if tiles:                       # odd tiles: 7 features, groups of 4 tokens (the 17-token sample alone)
        monkeypatch.setattr(tp, "CPU_TILE_N", tiles[0])
        monkeypatch.setattr(tp, "CPU_TILE_ELEMENTS", tiles[1])
        monkeypatch.setattr(tp, "LONG_BLOCK_SCALE", 1)
    x, L, sae = make_case(101, len(LENGTHS), 17, 13, 31, activation, lengths=LENGTHS, k=4)
    xp = pack_tokens(x, L)
    ref = encode_pool_reference(xp, L, sae, pool)
    got = _pooled(xp, L, sae, pool)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, rtol=2e-5, atol=2e-5)
    assert (got[L == 0] == 0).all()


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("pool", ["max", "mean"])
@pytest.mark.parametrize("chunks", [False, True])
def test_one_token_per_sample(monkeypatch, activation, pool, chunks):
    """One token per sample: the pooled value is the activation (TopK: sparse TopKRows, folded without the dense
    block); outputs are +0.0, never -0.0. chunks: groups of 12 tokens (7-feature tiles) whose epilogue takes 5 rows
    at a time (the last chunk of a group shorter)."""
    if chunks:
        monkeypatch.setattr(tp, "CPU_TILE_N", 7)
        monkeypatch.setattr(tp, "CPU_TILE_ELEMENTS", 7 * 3)
        monkeypatch.setattr(tp, "LONG_BLOCK_SCALE", 4)
        monkeypatch.setattr(tp, "EPILOGUE_ROWS", 5)
    x, L, sae = make_case(102, 29, 1, 11, 23, activation, lengths=[1] * 29, k=5)
    out = torch.full((29, 23), float("nan"))
    got = encode_pool(x, L, sae, pool, backend="torch", out=out)
    ref = encode_pool_reference(x, L, sae, pool)
    torch.testing.assert_close(got.double(), ref, rtol=2e-5, atol=2e-5)
    assert not torch.signbit(got).any()
    y = torch.randn(29, generator=torch.Generator().manual_seed(5))
    stats = encode_pool_stats(x, L, y, sae, CorrStats(23), pool, backend="torch")
    want = CorrStats(23).update(ref, y)
    assert torch.equal(stats.features[4:6], want.features[4:6])
    torch.testing.assert_close(stats.sums_at(want.shift), want.features, rtol=1e-5, atol=1e-5)


def test_all_samples_empty_but_one():
    x, L, sae = make_case(103, 4, 3, 9, 15, "jumprelu", lengths=[0, 0, 3, 0])
    got = encode_pool(x, L, sae, "max", backend="torch", out=torch.full((4, 15), float("nan")))
    torch.testing.assert_close(got.double(), encode_pool_reference(x, L, sae, "max"), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("activation", ["jumprelu", "topk"])
def test_bitwise_repeatable(activation):
    x, L, sae = make_case(104, len(LENGTHS), 17, 13, 31, activation, lengths=LENGTHS, k=4)
    y = torch.arange(len(LENGTHS)).remainder(3).float() - 0.5
    for pool in ("max", "mean"):
        a = encode_pool_stats(x, L, y, sae, CorrStats(31), pool, backend="torch")
        b = encode_pool_stats(x, L, y, sae, CorrStats(31), pool, backend="torch")
        assert torch.equal(a.features, b.features)
        assert torch.equal(encode_pool(x, L, sae, pool, backend="torch"), encode_pool(x, L, sae, pool, backend="torch"))


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_two_pass_topk(monkeypatch, pool):
    """TopK dictionaries wider than TOPK_ONE_PASS_MAX: the per-token cut first, then the tiled pooling pass (here
    forced on a small dictionary, with groups of several samples so max- and mean-pool differ)."""
    monkeypatch.setattr(tp, "TOPK_ONE_PASS_MAX", 0)
    monkeypatch.setattr(tp, "CPU_TILE_N", 8)
    monkeypatch.setattr(tp, "CPU_TILE_ELEMENTS", 8 * 20)
    x, L, sae = make_case(105, len(LENGTHS), 17, 13, 31, "topk", lengths=LENGTHS, k=4)
    xp = pack_tokens(x, L)
    torch.testing.assert_close(_pooled(xp, L, sae, pool).double(), encode_pool_reference(xp, L, sae, pool),
                               rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("activation", ["jumprelu", "topk"])
def test_worker_threads(monkeypatch, activation):
    """Two intra-op threads: tiles (TopK: token groups) spread over two worker threads, sinks called from them;
    the result equals the float64 reference and the one-thread run bitwise."""
    monkeypatch.setattr(tp, "CPU_TILE_N", 5)
    monkeypatch.setattr(tp, "CPU_TILE_ELEMENTS", 5 * 12)
    monkeypatch.setattr(tp, "TOPK_TILE_ELEMENTS", 31 * 6)
    x, L, sae = make_case(106, len(LENGTHS), 17, 13, 31, activation, lengths=LENGTHS, k=4)
    y = torch.arange(len(LENGTHS)).remainder(3).float() - 0.5
    old = torch.get_num_threads()
    got = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            got[n] = [(encode_pool(x, L, sae, pool, backend="torch"),
                       encode_pool_stats(x, L, y, sae, CorrStats(31), pool, backend="torch").features)
                      for pool in ("max", "mean")]
    finally:
        torch.set_num_threads(old)
    for (z1, f1), (z2, f2), pool in zip(got[1], got[2], ("max", "mean")):
        ref = encode_pool_reference(x, L, sae, pool)
        torch.testing.assert_close(z2.double(), ref, rtol=2e-5, atol=2e-5)
        assert torch.equal(z1, z2) and torch.equal(f1, f2)


def test_worker_pool_is_renewed_after_a_fork(monkeypatch):
    """After a fork the parent's worker threads do not exist in the child: the child (another pid) must get a pool of
    its own, or its first two-worker call waits forever (a forked child without the pid check hung until SIGALRM)."""
    parent = tp.worker_pool(2)
    assert tp.worker_pool(2) is parent
    pid = os.getpid()
    monkeypatch.setattr(tp.os, "getpid", lambda: pid + 1)
    child = tp.worker_pool(2)
    assert child is not parent and tp.worker_pool(2) is child
    assert child.submit(lambda: 7).result(timeout=30) == 7
