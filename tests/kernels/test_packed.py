"""Packed-token input ([N, d_in] + lengths) and the tile-spanning paths of the packed kernel.

Under the interpreter the Triton kernel runs with BLOCK_M = 16 tokens, so lengths here are chosen to put samples
inside one tile, across one edge, across several tiles, and as runs of one-token and empty samples.
"""
import importlib
import zlib

import pytest
import torch
from cases import make_case
from conftest import FAST_BACKENDS, on_backend

from corrsteer_kernels import CorrStats, encode_pool, encode_pool_reference, encode_pool_stats, pack_tokens
from corrsteer_kernels.torch_path import sample_groups

tp = importlib.import_module("corrsteer_kernels.torch_path")
ep = importlib.import_module("corrsteer_kernels.encode_pool")

PATTERNS = {
    "spans": [40, 0, 3, 17, 1, 1, 0, 33, 2],          # 40 and 33 cross several 16-token tiles
    "one-token": [1] * 37,                              # MMLU-style: every sample one token
    "ragged": [5, 1, 0, 16, 15, 2, 1, 9, 31, 4],
    "single": [29],
    "edges": [16, 16, 15, 1, 17],                      # samples ending exactly on tile edges
}


def _case(seed, pattern, activation, d_sae=45, dtype=torch.float32):
    lengths = PATTERNS[pattern]
    T = max(lengths)
    return make_case(seed, len(lengths), T, 19, d_sae, activation, lengths=lengths, dtype=dtype, k=5)


def check_close(got, ref):
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_packed_equals_padded_and_reference(backend, pattern, activation, pool):
    x, L, sae = _case(zlib.crc32(f"{pattern}/{activation}".encode()) % 1000, pattern, activation)
    ref = encode_pool_reference(x, L, sae, pool)
    xp = pack_tokens(x, L)
    assert xp.shape[0] == int(L.sum())
    torch.testing.assert_close(encode_pool_reference(xp, L, sae, pool), ref, rtol=1e-12, atol=1e-12)
    xp, L, sae = on_backend(backend, xp, L, sae)
    out = torch.full((len(PATTERNS[pattern]), sae.d_sae), float("nan"), device=xp.device)   # poisoned
    check_close(encode_pool(xp, L, sae, pool, backend=backend, out=out).cpu(), ref)
    y = torch.arange(len(PATTERNS[pattern])).remainder(3).float() - 0.5       # real-valued, some <= 0
    got = encode_pool_stats(xp, L, y.to(xp.device), sae, CorrStats(sae.d_sae), pool, backend=backend)
    want = CorrStats(sae.d_sae).update(ref, y)
    torch.testing.assert_close(got.sums_at(want.shift).cpu(), want.features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.scalars.cpu(), want.scalars, rtol=0, atol=0)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_packed_bf16_tokens_and_weights(backend):
    x, L, sae = _case(5, "ragged", "jumprelu", dtype=torch.bfloat16)
    sae = sae.to(dtype=torch.bfloat16)
    ref = encode_pool_reference(x, L, sae, "max")
    got = encode_pool(*on_backend(backend, pack_tokens(x, L), L, sae), "max", backend=backend).cpu()
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_packed_all_empty_and_no_samples(backend):
    _, _, sae = _case(6, "single", "relu")
    L = torch.zeros(4, dtype=torch.long)
    xp, L, sae = on_backend(backend, torch.zeros(0, 19), L, sae)
    out = encode_pool(xp, L, sae, "mean", backend=backend)
    assert out.shape == (4, sae.d_sae) and not out.any()
    st = encode_pool_stats(xp, L, torch.ones(4, device=xp.device), sae, CorrStats(sae.d_sae), backend=backend)
    assert int(st.scalars[0]) == 4 and not st.features.any()
    assert encode_pool(xp, L[:0], sae, backend=backend).shape == (0, sae.d_sae)


def test_packed_length_mismatch_is_one_line_error():
    x, L, sae = _case(7, "ragged", "relu")
    with pytest.raises(ValueError, match=r"packed x has 84 tokens but lengths sum to 85"):
        encode_pool(pack_tokens(x, L), L + torch.tensor([1] + [0] * 9), sae)


def test_topk_two_pass_path_for_wide_dictionaries(monkeypatch):
    """Dictionaries wider than TOPK_ONE_PASS_MAX take the threshold pre-pass; both paths equal the reference."""
    x, L, sae = _case(8, "spans", "topk", d_sae=70)
    ref = encode_pool_reference(x, L, sae, "mean")
    one = encode_pool(x, L, sae, "mean", backend="torch")
    monkeypatch.setattr(tp, "TOPK_ONE_PASS_MAX", 16)
    two = encode_pool(x, L, sae, "mean", backend="torch")
    check_close(one, ref)
    check_close(two, ref)


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_torch_path_small_groups(monkeypatch, pool):
    """Groups of a few tokens: samples never share a group with more than a few others; a long one is alone."""
    monkeypatch.setattr(tp, "CPU_TILE_N", 8)
    monkeypatch.setattr(tp, "CPU_TILE_ELEMENTS", 8 * 6)
    for act in ("jumprelu", "topk"):
        x, L, sae = _case(9, "spans", act)
        check_close(encode_pool(x, L, sae, pool, backend="torch"), encode_pool_reference(x, L, sae, pool))


def test_sample_groups():
    assert sample_groups([3, 0, 4, 10, 1], 5) == [(0, 2, 0, 3), (2, 3, 3, 7), (3, 4, 7, 17), (4, 5, 17, 18)]
    assert sample_groups([], 5) == []
    assert sample_groups([0, 0], 5) == [(0, 2, 0, 0)]
    assert sample_groups([2, 2, 1], 5) == [(0, 3, 0, 5)]


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_unchecked_call_equals_checked(backend, pool):
    """check=False (collection's per-layer call: no host sync) computes exactly what the checked call does."""
    x, L, sae = _case(10, "spans", "jumprelu")
    xp, L, sae = on_backend(backend, pack_tokens(x, L), L, sae)
    y = (torch.arange(L.shape[0]) % 2).float().to(xp.device)
    a = encode_pool_stats(xp, L, y, sae, CorrStats(sae.d_sae), pool, backend=backend)
    b = encode_pool_stats(xp, L, y, sae, CorrStats(sae.d_sae), pool, backend=backend, check=False)
    assert torch.equal(a.features, b.features) and torch.equal(a.scalars, b.scalars)
    with pytest.raises(ValueError, match=r"y must have shape \[9\]"):
        encode_pool_stats(xp, L, y[:3], sae, CorrStats(sae.d_sae), pool, backend=backend, check=False)


@pytest.mark.skipif("triton" not in FAST_BACKENDS, reason="needs triton")
@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_split_strategy_equals_reference(monkeypatch, pattern, activation, pool):
    """The split strategy (GEMM to fp32 pre-activations, then the streaming pooling kernel: range edges every 16 rows
    under the interpreter, carries every 4) gives what the reference and the fused kernel give, pooled and folded."""
    monkeypatch.setenv("CORRSTEER_PACKED_STRATEGY", "split")
    x, L, sae = _case(zlib.crc32(f"split/{pattern}/{activation}".encode()) % 1000, pattern, activation)
    ref = encode_pool_reference(x, L, sae, pool)
    xp, L, sae = on_backend("triton", pack_tokens(x, L), L, sae)
    out = torch.full((len(PATTERNS[pattern]), sae.d_sae), float("nan"), device=xp.device)   # poisoned
    check_close(encode_pool(xp, L, sae, pool, backend="triton", out=out).cpu(), ref)
    y = torch.arange(len(PATTERNS[pattern])).remainder(3).float() - 0.5
    got = encode_pool_stats(xp, L, y.to(xp.device), sae, CorrStats(sae.d_sae), pool, backend="triton")
    want = CorrStats(sae.d_sae).update(ref, y)
    torch.testing.assert_close(got.sums_at(want.shift).cpu(), want.features, rtol=1e-5, atol=1e-5)


def test_unknown_strategy_is_one_line_error(monkeypatch):
    monkeypatch.setenv("CORRSTEER_PACKED_STRATEGY", "fast")
    from corrsteer_kernels.packed_kernel import strategy
    with pytest.raises(ValueError, match=r"CORRSTEER_PACKED_STRATEGY must be one of "
                                         r"\('auto', 'fused', 'split', 'fused_n'\)"):
        strategy()


@pytest.mark.skipif("triton" not in FAST_BACKENDS, reason="needs triton")
@pytest.mark.parametrize("prefetch", [0, 1])
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_split_strategy_over_many_gemm_chunks(monkeypatch, pool, prefetch):
    """GEMM chunks of one row range each: the pooling kernel's row offset and range numbering across chunks, with
    and without the next block fetched ahead."""
    sk = importlib.import_module("corrsteer_kernels.split_kernel")
    monkeypatch.setenv("CORRSTEER_PACKED_STRATEGY", "split")
    monkeypatch.setattr(sk, "CHUNK_BYTES", 1)
    monkeypatch.setattr(sk, "INTERPRETER_SPLIT", {**sk.INTERPRETER_SPLIT, "PREFETCH": prefetch})
    monkeypatch.setattr(sk, "SPLIT_CONFIGS", [{**c, "PREFETCH": prefetch} for c in sk.SPLIT_CONFIGS])   # GPU
    x, L, sae = _case(11, "spans", "jumprelu")
    ref = encode_pool_reference(x, L, sae, pool)
    xp, L, sae = on_backend("triton", pack_tokens(x, L), L, sae)
    check_close(encode_pool(xp, L, sae, pool, backend="triton").cpu(), ref)
    y = torch.arange(L.shape[0]).remainder(2).float().to(xp.device)
    got = encode_pool_stats(xp, L, y, sae, CorrStats(sae.d_sae), pool, backend="triton")
    want = CorrStats(sae.d_sae).update(ref, y.cpu())
    torch.testing.assert_close(got.sums_at(want.shift).cpu(), want.features,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("triton" not in FAST_BACKENDS, reason="needs triton")
def test_topk_cuts_on_the_triton_path_equal_the_torch_ones():
    """token_thresholds_triton (kernel pre-activations, device topk, chunked) = token_thresholds (torch path)."""
    x, L, sae = _case(12, "spans", "topk", d_sae=70)
    xp = pack_tokens(x, L)
    want = tp.token_thresholds(xp, sae)
    got = ep.token_thresholds_triton(*on_backend("triton", xp, sae)).cpu()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
