"""The tokens-on-N fused strategy (tokens_n_kernel.py, CORRSTEER_PACKED_STRATEGY=fused_n) against the float64
reference, under the interpreter: 8-token tiles, chunks of 2 tiles (edges moved to sample starts), 3 persistent
programs over (chunk, 16-feature block) work items; odd sizes (24 d_in, 40 features), empty and one-token samples,
samples across tile and chunk edges, every activation, max and mean pool, pooled and folded."""
import importlib

import pytest
import torch
from cases import make_case, poisoned_empty
from conftest import FAST_BACKENDS, on_backend

from corrsteer_kernels import CorrStats, encode_pool, encode_pool_reference, encode_pool_stats, pack_tokens
from corrsteer_kernels.launch import MODE_POOL, Segments
from corrsteer_kernels.tokens_n_kernel import chunk_bounds

pk = importlib.import_module("corrsteer_kernels.packed_kernel")
tn = importlib.import_module("corrsteer_kernels.tokens_n_kernel")
needs_triton = pytest.mark.skipif("triton" not in FAST_BACKENDS, reason="needs triton")

LENGTHS = {"odd": [2, 0, 1, 5, 1, 4],                               # 13 tokens
           "ragged": [5, 1, 0, 16, 2, 1, 9, 0, 31, 3],
           "one-token": [1] * 13,
           "spans": [40, 0, 1, 19]}                                  # 40 and 19 cross chunks


def _check(x, L, sae, pool, y):
    ref = encode_pool_reference(x, L, sae, pool)
    xp, L, sae = on_backend("triton", pack_tokens(x, L), L, sae)
    out = torch.full((L.shape[0], sae.d_sae), float("nan"), device=xp.device)         # poisoned
    got = encode_pool(xp, L, sae, pool, backend="triton", out=out).cpu()
    torch.testing.assert_close(got.double(), ref, rtol=2e-5, atol=2e-5)
    st = encode_pool_stats(xp, L, y.to(xp.device), sae, CorrStats(sae.d_sae), pool, backend="triton")
    want = CorrStats(sae.d_sae).update(ref, y)
    torch.testing.assert_close(st.sums_at(want.shift).cpu(), want.features, rtol=1e-5, atol=1e-5)
    assert torch.equal(st.scalars.cpu(), want.scalars)
    return st


@pytest.fixture
def fused_n(monkeypatch):
    monkeypatch.setenv("CORRSTEER_PACKED_STRATEGY", "fused_n")


@needs_triton
@pytest.mark.parametrize("pattern", list(LENGTHS))
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_fused_n_equals_reference(fused_n, pattern, activation, pool):
    L = LENGTHS[pattern]
    x, L, sae = make_case(60 + len(L), len(L), max(L), 24, 40, activation, lengths=L, k=5)
    _check(x, L, sae, pool, torch.arange(len(L)).remainder(3).double() - 0.5)


@needs_triton
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_fused_n_unaligned_chunks_and_combine_kernel(fused_n, monkeypatch, pool):
    """Chunk edges left where they fall (samples split mid-chunk), crossing samples combined by the combine
    kernel, then by torch: both equal the reference."""
    monkeypatch.setattr(pk, "INTERPRETER_TOKENS_N", {**pk.INTERPRETER_TOKENS_N, "ALIGN": False})
    L = LENGTHS["ragged"]
    x, L, sae = make_case(70, len(L), max(L), 24, 40, "jumprelu", lengths=L)
    y = torch.arange(len(L)).remainder(2).double()
    for combine in ("kernel", "torch"):
        monkeypatch.setenv("CORRSTEER_COMBINE", combine)
        _check(x, L, sae, pool, y)


@needs_triton
def test_fused_n_is_deterministic(fused_n):
    L = LENGTHS["spans"]
    x, L, sae = make_case(71, len(L), max(L), 24, 40, "relu", lengths=L)
    xp, L, sae = on_backend("triton", pack_tokens(x, L), L, sae)
    y = torch.tensor([1.0, 0.0, -1.0, 2.0], device=xp.device)
    a = encode_pool_stats(xp, L, y, sae, CorrStats(40), "mean", backend="triton")
    b = encode_pool_stats(xp, L, y, sae, CorrStats(40), "mean", backend="triton")
    assert torch.equal(a.features, b.features)


@needs_triton
@pytest.mark.parametrize("pattern", ["ragged", "spans"])
def test_boundary_slots_written_whole(monkeypatch, pattern):
    """The kernel writes every chunk's two slots, used or not (the launcher does not zero them): 2c = the sample
    entering chunk c + 1, 2c + 1 = the one leaving it + 1 unless that one also entered, else 0."""
    L = torch.tensor(LENGTHS[pattern])
    x, L, sae = make_case(73, len(L), int(L.max()), 24, 40, "relu", lengths=L)
    xp, L, sae = on_backend("triton", pack_tokens(x, L), L, sae)
    segs = Segments.of(L, xp.shape[0])
    out = torch.zeros(len(L), 40, device=xp.device)
    with monkeypatch.context() as m:
        m.setattr(torch, "empty", poisoned_empty)
        launch = tn.tokens_n_encode(xp, segs, sae, "max", MODE_POOL, out=out)
    edges = chunk_bounds(segs, xp.shape[0], launch.slot.shape[0] // 2).tolist()
    want = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        s_in, s_out = (int(segs.seg[lo]), int(segs.seg[hi - 1])) if lo < hi else (0, 0)
        enters = lo < hi and int(segs.starts[s_in]) < lo
        leaves = lo < hi and int(segs.ends[s_out]) > hi and not (enters and s_in == s_out)
        want += [s_in + 1 if enters else 0, s_out + 1 if leaves else 0]
    assert launch.slot.tolist() == want and any(want)


@needs_triton
@pytest.mark.parametrize("pattern", ["odd", "ragged", "spans"])
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_tma_variant_equals_reference(fused_n, monkeypatch, pattern, pool):
    """The TMA variant (host-side tensor descriptors; the interpreter runs them on fp32 operands): tokens past a
    chunk's end arrive unmasked through TMA and must be dropped by the epilogue's masks."""
    monkeypatch.setattr(tn, "use_tma", lambda xp, W: True)
    L = LENGTHS[pattern]
    x, L, sae = make_case(75 + len(L), len(L), max(L), 24, 40, "jumprelu", lengths=L)
    _check(x, L, sae, pool, torch.arange(len(L)).remainder(3).double() - 0.5)
    assert not tn._TMA_FAILED


@needs_triton
def test_tma_failure_falls_back_to_masked_loads(fused_n, monkeypatch):
    """Where the TMA variant fails to build (forced here: plain tensors passed as descriptors), the call warns,
    remembers it, and gives the masked-load result."""
    monkeypatch.setattr(tn, "_TMA_FAILED", [])
    monkeypatch.setattr(tn, "use_tma", lambda xp, W: not tn._TMA_FAILED)
    monkeypatch.setattr(tn, "_descriptors", lambda xp, W, cfg, tma: (xp, W))
    L = LENGTHS["odd"]
    x, L, sae = make_case(74, len(L), max(L), 24, 40, "relu", lengths=L)
    xp, Ld, sd = on_backend("triton", pack_tokens(x, L), L, sae)
    with pytest.warns(UserWarning, match="TMA descriptors failed here"):
        got = encode_pool(xp, Ld, sd, "max", backend="triton")
    assert len(tn._TMA_FAILED) == 1
    torch.testing.assert_close(got.cpu().double(), encode_pool_reference(x, L, sae, "max"), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("lengths", [[5, 1, 0, 16, 2, 1, 9, 0, 31, 3], [1] * 13, [40], [0, 7, 0]])
@pytest.mark.parametrize("n_chunks", [1, 3, 5])
def test_chunk_bounds(lengths, n_chunks):
    """Even cuts, each moved back to its sample's start when at most half a chunk away; from 0 to N, never
    decreasing."""
    L = torch.tensor(lengths)
    n = int(L.sum())
    segs = Segments.of(L, n)
    got = chunk_bounds(segs, n, n_chunks).tolist()
    starts = set(segs.starts.tolist())
    assert got[0] == 0 and got[-1] == n and got == sorted(got)
    for c, e in enumerate(got[1:-1], 1):
        even = c * n // n_chunks
        if even - max(s for s in starts if s <= even) <= n // (2 * n_chunks):
            assert e in starts and e <= even
        else:
            assert e == even
    assert chunk_bounds(segs, n, n_chunks, align=False).tolist() == [c * n // n_chunks for c in range(n_chunks + 1)]


@pytest.mark.gpu
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_fused_n_bf16_on_gpu(monkeypatch, pool):
    """On a GPU: bf16 operands (TMA descriptors on Hopper), a collection-sized ragged batch: equal to the reference
    and bitwise repeatable."""
    monkeypatch.setenv("CORRSTEER_PACKED_STRATEGY", "fused_n")
    g = torch.Generator().manual_seed(1)
    L = torch.randint(1, 65, (64,), generator=g)
    x, L, sae = make_case(72, 64, 64, 576, 4096, "jumprelu", lengths=L, need_margin=False)
    sae = sae.to(dtype=torch.bfloat16)
    xp = pack_tokens(x, L).to(torch.bfloat16)
    y = (torch.arange(64) % 2).double()
    ref = encode_pool_reference(xp, L, sae, pool)
    xp, L, sae = xp.cuda(), L.cuda(), sae.to("cuda")
    got = encode_pool(xp, L, sae, pool, backend="triton").cpu().double()
    assert torch.isclose(got, ref, rtol=1e-3, atol=1e-3).double().mean() > 0.999
    a = encode_pool_stats(xp, L, y.cuda(), sae, CorrStats(4096), pool, backend="triton")
    b = encode_pool_stats(xp, L, y.cuda(), sae, CorrStats(4096), pool, backend="triton")
    assert torch.equal(a.features, b.features)


@needs_triton
def test_fused_n_bf16_tokens_and_weights(fused_n):
    L = LENGTHS["ragged"]
    x, L, sae = make_case(76, len(L), max(L), 24, 40, "jumprelu", lengths=L, dtype=torch.bfloat16)
    sae = sae.to(dtype=torch.bfloat16)
    xp, Ld, sd = on_backend("triton", pack_tokens(x, L), L, sae)
    got = encode_pool(xp, Ld, sd, "mean", backend="triton")
    torch.testing.assert_close(got.cpu().double(), encode_pool_reference(x, L, sae, "mean"), rtol=1e-4, atol=1e-4)
