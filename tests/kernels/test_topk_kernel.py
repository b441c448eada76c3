"""The one-pass TopK kernel (topk_kernel.py) against the float64 reference, under the interpreter (16-token tiles,
16-feature blocks): samples inside a tile, across edges and over several tiles, empty and one-token samples, max and
mean pool, pooled and folded, several row chunks, k >= d_sae, and ties at the cut."""
import importlib

import pytest
import torch
from cases import make_case, poisoned_empty
from conftest import FAST_BACKENDS, on_backend

from corrsteer_kernels import CorrStats, encode_pool, encode_pool_reference, encode_pool_stats, pack_tokens
from corrsteer_kernels.corr_stats import fold_parts, zero_sums
from corrsteer_kernels.launch import MODE_POOL, MODE_STATS, Segments
from corrsteer_kernels.packed_kernel import boundary_feature_sums, combine_boundary
from corrsteer_kernels.prepared import prepare_batch
from corrsteer_kernels.topk_kernel import topk_encode, topk_strategy

pytestmark = pytest.mark.skipif("triton" not in FAST_BACKENDS, reason="needs triton")

LENGTHS = {"ragged": [5, 1, 0, 16, 2, 1, 9, 0, 31, 3], "one-token": [1] * 13, "spans": [40, 0, 1, 33]}


@pytest.fixture(autouse=True)
def one_pass(monkeypatch):
    monkeypatch.setenv("CORRSTEER_TOPK_STRATEGY", "one_pass")


def _check(x, L, sae, pool, y=None):
    ref = encode_pool_reference(x, L, sae, pool)
    xp, L, sae = on_backend("triton", pack_tokens(x, L), L, sae)
    out = torch.full((L.shape[0], sae.d_sae), float("nan"), device=xp.device)         # poisoned
    got = encode_pool(xp, L, sae, pool, backend="triton", out=out).cpu()
    torch.testing.assert_close(got.double(), ref, rtol=2e-5, atol=2e-5)
    if y is not None:
        st = encode_pool_stats(xp, L, y.to(xp.device), sae, CorrStats(sae.d_sae), pool, backend="triton")
        want = CorrStats(sae.d_sae).update(ref, y)
        torch.testing.assert_close(st.sums_at(want.shift).cpu(), want.features, rtol=1e-5, atol=1e-5)
    return got


@pytest.mark.parametrize("combine", ["torch", "kernel"])
@pytest.mark.parametrize("pattern", list(LENGTHS))
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_one_pass_topk_equals_reference(monkeypatch, combine, pattern, pool):
    monkeypatch.setenv("CORRSTEER_COMBINE", combine)
    L = LENGTHS[pattern]
    x, L, sae = make_case(40 + len(L), len(L), max(L), 24, 40, "topk", lengths=L, k=5)
    y = torch.arange(len(L)).remainder(3).double() - 0.5
    _check(x, L, sae, pool, y)


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_unzeroed_allocations(monkeypatch, pool):
    """The launcher's slots, scratch, boundary parts and per-tile sums come unzeroed (poisoned here): the kernel
    writes every slot (edge_slots) and every part it leaves for the combine."""
    L = torch.tensor(LENGTHS["ragged"])
    x, L, sae = make_case(54, len(L), int(L.max()), 24, 40, "topk", lengths=L, k=5)
    ref = encode_pool_reference(x, L, sae, pool)
    y = torch.arange(len(L)).remainder(2).double()
    want = CorrStats(40).update(ref, y)
    xp, L, y, sae = on_backend("triton", pack_tokens(x, L), L, y, sae)
    segs = Segments.of(L, xp.shape[0])
    out = torch.zeros(len(L), 40, device=xp.device)
    with monkeypatch.context() as m:
        m.setattr(torch, "empty", poisoned_empty)
        pooled = topk_encode(xp, segs, sae, pool, MODE_POOL, out=out)
        folded = topk_encode(xp, segs, sae, pool, MODE_STATS, y=y)
    assert (pooled.slot >= 0).all() and (folded.slot >= 0).all()
    samples, z = combine_boundary(pooled, pool, L)
    out[samples] = z
    torch.testing.assert_close(out.cpu().double(), ref, rtol=2e-5, atol=2e-5)
    c = want.shift.to(xp.device)
    sums = fold_parts(folded.part, c) + boundary_feature_sums(folded, pool, L, y, c) \
        + zero_sums(*prepare_batch(L, y).empty_samples(), c)          # length-0 samples: seen by no tile
    torch.testing.assert_close(sums.cpu(), want.features, rtol=1e-5, atol=1e-5)


def test_k_at_least_d_sae_keeps_every_positive():
    x, L, sae = make_case(50, 4, 9, 24, 13, "topk", lengths=[9, 0, 1, 6], k=16)
    _check(x, L, sae, "max")


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_several_row_chunks(monkeypatch, pool):
    """Scratch chunks of one 16-row tile each: the kernel's row offset and tile numbering across launches."""
    monkeypatch.setattr(importlib.import_module("corrsteer_kernels.split_kernel"), "CHUNK_BYTES", 1)
    x, L, sae = make_case(51, 5, 20, 24, 40, "topk", lengths=[20, 3, 0, 17, 1], k=5)
    _check(x, L, sae, pool, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]))


def test_ties_at_the_cut_keep_exactly_k():
    """Two identical dictionary columns (3 and 7) give equal pre-activations in fp32 and float64; their bias puts
    them exactly at token 0's cut (k - 1 others above). The reference (torch.topk) then keeps exactly k, one of the
    pair, its choice unspecified; the kernel keeps exactly k too, the lower column. One-token samples and max-pool
    expose each token's kept set."""
    k = 4
    x, L, sae = make_case(52, 11, 1, 24, 40, "topk", lengths=[1] * 11, k=k, need_margin=False)
    sae.W_enc[:, 7] = sae.W_enc[:, 3]
    x0 = x[0, 0].double() - sae.b_dec.double()
    pre0 = x0 @ sae.W_enc.double() + sae.b_enc.double()
    others = [j for j in range(40) if j not in (3, 7)]
    v = torch.sort(pre0[others], descending=True).values
    assert v[k - 1] > 0
    sae.b_enc[3] = sae.b_enc[7] = float(0.5 * (v[k - 2] + v[k - 1]) - x0 @ sae.W_enc[:, 3].double())
    sae._cache.clear()
    ref = encode_pool_reference(x, L, sae, "max")
    xp, L2, sae2 = on_backend("triton", pack_tokens(x, L), L, sae)
    got = encode_pool(xp, L2, sae2, "max", backend="triton").cpu().double()
    assert ((got > 0).sum(1) == (ref > 0).sum(1)).all()            # exactly as many kept as the reference
    assert (ref[0, 3] > 0) != (ref[0, 7] > 0)                       # the reference keeps one of the pair...
    assert got[0, 3] > 0 and got[0, 7] == 0                         # ...the kernel the lower column
    assert not ((got[:, 7] > 0) & (got[:, 3] == 0)).any()
    torch.testing.assert_close(got[:, others], ref[:, others], rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(got[:, 3] + got[:, 7], ref[:, 3] + ref[:, 7], rtol=2e-5, atol=2e-5)


def test_unknown_topk_strategy_is_one_line_error(monkeypatch):
    monkeypatch.setenv("CORRSTEER_TOPK_STRATEGY", "sorted")
    with pytest.raises(ValueError, match=r"CORRSTEER_TOPK_STRATEGY must be one of \('two_pass', 'one_pass', 'auto'\)"):
        topk_strategy()


def test_auto_takes_two_passes_until_timed(monkeypatch):
    """CORRSTEER_TOPK_STRATEGY=auto times the two strategies only on a GPU (>= 1024 tokens); here: two passes."""
    monkeypatch.setenv("CORRSTEER_TOPK_STRATEGY", "auto")
    monkeypatch.setattr(importlib.import_module("corrsteer_kernels.encode_pool"), "topk_encode", None)
    x, L, sae = make_case(55, 3, 5, 24, 40, "topk", lengths=[5, 0, 2], k=5)
    _check(x, L, sae, "max")


@pytest.mark.gpu
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_one_pass_topk_bf16_on_gpu_is_deterministic(pool):
    """On a GPU: bf16 operands at a collection-sized shape, equal to the reference and bitwise repeatable."""
    x, L, sae = make_case(53, 32, 64, 576, 2304, "topk", lengths=torch.randint(1, 65, (32,),
                          generator=torch.Generator().manual_seed(0)), k=32, need_margin=False)
    sae = sae.to(dtype=torch.bfloat16)
    xp = pack_tokens(x, L).to(torch.bfloat16)
    ref = encode_pool_reference(xp, L, sae, pool)
    xp, L, sae = xp.cuda(), L.cuda(), sae.to("cuda")
    a = encode_pool(xp, L, sae, pool, backend="triton")
    b = encode_pool(xp, L, sae, pool, backend="triton")
    assert torch.equal(a, b)
    close = torch.isclose(a.cpu().double(), ref, rtol=1e-3, atol=1e-3).double().mean()
    assert close > 0.999          # no margin at this size: a rare near-tie at a cut may flip


def test_one_pass_topk_bf16_tokens_and_weights():
    L = LENGTHS["ragged"]
    x, L, sae = make_case(56, len(L), max(L), 24, 40, "topk", lengths=L, k=5, dtype=torch.bfloat16)
    _check(x, L, sae.to(dtype=torch.bfloat16), "max")
