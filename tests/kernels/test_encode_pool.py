"""encode_pool against the float64 reference, and the reference against sae-lens semantics written out by hand."""
import importlib

import pytest
import torch
from cases import make_case
from conftest import FAST_BACKENDS, on_backend

from corrsteer_kernels import SAEWeights, encode_pool, encode_pool_reference

tp = importlib.import_module("corrsteer_kernels.torch_path")
ACTS = ["relu", "jumprelu", "topk"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# lengths include empty and length-1 samples, a full-length one and odd ones
LENGTHS = [0, 1, 23, 9, 14]


def naive_pool(x, lengths, sae, pool):
    """Loop-by-loop float64 restatement of the spec (independent of encode_pool_reference)."""
    B, T, d_in = x.shape
    out = torch.zeros(B, sae.d_sae, dtype=torch.float64)
    for b in range(B):
        rows = []
        for t in range(int(lengths[b])):
            v = x[b, t].double()
            if sae.b_dec is not None:
                v = v - sae.b_dec.double()
            pre = v @ sae.W_enc.double() + sae.b_enc.double()
            if sae.activation == "relu":
                a = torch.where(pre > 0, pre, 0.0)
            elif sae.activation == "jumprelu":
                a = torch.where((pre > sae.threshold.double()) & (pre > 0), pre, 0.0)
            else:
                idx = torch.argsort(pre, descending=True)[: sae.k]
                a = torch.zeros_like(pre)
                a[idx] = pre[idx].clamp(min=0)
            rows.append(a)
        if rows:
            r = torch.stack(rows)
            out[b] = r.max(0).values if pool == "max" else r.mean(0)
    return out


def check_close(got, ref, dtype_in):
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    tol = 2e-5 * (1 + ref.abs().max())
    err = (got.double().cpu() - ref).abs().max()
    assert err <= tol, f"max abs error {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_reference_matches_naive_loops(activation, pool):
    x, L, sae = make_case(1, 5, 23, 19, 45, activation, lengths=LENGTHS)
    ref = encode_pool_reference(x, L, sae, pool)
    assert ref.dtype == torch.float64
    torch.testing.assert_close(ref, naive_pool(x, L, sae, pool), rtol=1e-12, atol=1e-12)
    assert ref[0].abs().sum() == 0 and ref[1:].abs().sum() > 0    # empty sample pools to 0, others don't


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_fast_paths_match_reference(backend, dtype, activation, pool):
    seed = hash((backend, str(dtype), activation, pool)) % 1000
    x, L, sae = make_case(seed, 5, 23, 37, 101, activation, dtype=dtype, lengths=LENGTHS)
    ref = encode_pool_reference(x, L, sae, pool)
    x, L, sae = on_backend(backend, x, L, sae)
    out = torch.full((5, 101), float("nan"), device=x.device)   # poisoned: every entry must be written
    got = encode_pool(x, L, sae, pool, backend=backend, out=out)
    assert got.data_ptr() == out.data_ptr()
    check_close(got, ref, dtype)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("wdtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights(backend, wdtype):
    x, L, sae = make_case(7, 4, 17, 33, 70, "jumprelu", dtype=wdtype, wdtype=wdtype, lengths=[17, 0, 1, 5])
    ref = encode_pool_reference(x, L, sae, "max")
    check_close(encode_pool(*on_backend(backend, x, L, sae), "max", backend=backend), ref, wdtype)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_no_b_dec_and_topk_wider_than_dictionary(backend):
    x, L, sae = make_case(3, 3, 6, 16, 20, "relu", b_dec=False, lengths=[6, 2, 0])
    ref = encode_pool_reference(x, L, sae, "max")
    check_close(encode_pool(*on_backend(backend, x, L, sae), "max", backend=backend), ref, None)
    x, L, sae = make_case(4, 3, 6, 16, 20, "topk", k=25, lengths=[6, 2, 1])   # k >= d_sae: plain relu
    ref = encode_pool_reference(x, L, sae, "mean")
    check_close(encode_pool(*on_backend(backend, x, L, sae), "mean", backend=backend), ref, None)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_torch_path_tiles_and_token_chunks(monkeypatch, activation, pool):
    """Tiny tiles: samples straddle token chunks and the dictionary splits into uneven tiles."""
    monkeypatch.setattr(tp, "CPU_TILE_N", 16)
    monkeypatch.setattr(tp, "CPU_TILE_ELEMENTS", 16 * 5)   # 5 tokens per chunk
    x, L, sae = make_case(11, 5, 23, 21, 53, activation, lengths=LENGTHS)
    check_close(encode_pool(x, L, sae, pool, backend="torch"), encode_pool_reference(x, L, sae, pool), None)


def test_wide_dictionary_torch_path():
    # relu is continuous at its threshold, so no margin is needed for a value comparison
    x, L, sae = make_case(5, 3, 4, 8, 200_003, "relu", lengths=[4, 1, 0], need_margin=False)
    check_close(encode_pool(x, L, sae, "max", backend="torch"), encode_pool_reference(x, L, sae, "max"), None)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_noncontiguous_input_and_all_empty(backend):
    x, L, sae = make_case(6, 4, 10, 24, 40, "relu", lengths=[3, 10, 1, 7])
    ref = encode_pool_reference(x, L, sae, "max")
    x, L, sae = on_backend(backend, x, L, sae)
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)          # same values, other strides
    assert not xt.is_contiguous()
    check_close(encode_pool(xt, L, sae, "max", backend=backend), ref, None)
    zero = encode_pool(x, torch.zeros(4, dtype=torch.long), sae, "mean", backend=backend)
    assert zero.shape == (4, 40) and zero.abs().sum() == 0
    assert encode_pool(x[:0], L[:0], sae, backend=backend).shape == (0, 40)


@pytest.mark.parametrize("backend", ["reference"] + FAST_BACKENDS)
def test_bad_inputs_raise(backend):
    x, L, sae = on_backend(backend, *make_case(8, 2, 5, 12, 30, "relu", lengths=[5, 2]))
    bad = x.clone()
    bad[1, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        encode_pool(bad, L, sae, backend=backend)
    bad[1, 1, 3] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        encode_pool(bad, L, sae, backend=backend)
    with pytest.raises(ValueError, match="d_in"):
        encode_pool(x[:, :, :11], L, sae, backend=backend)
    with pytest.raises(ValueError, match="lengths"):
        encode_pool(x, torch.tensor([6, 1]), sae, backend=backend)
    with pytest.raises(ValueError, match="lengths"):
        encode_pool(x, torch.tensor([-1, 1]), sae, backend=backend)
    with pytest.raises(TypeError, match="integer"):
        encode_pool(x, torch.tensor([1.0, 2.0]), sae, backend=backend)
    with pytest.raises(ValueError, match="pool"):
        encode_pool(x, L, sae, pool="sum", backend=backend)
    with pytest.raises(ValueError, match=r"padded \[B, T, d_in\] or packed \[N, d_in\]"):
        encode_pool(x[None], L, sae, backend=backend)
    with pytest.raises(ValueError, match="packed x has 5 tokens but lengths sum to 7"):
        encode_pool(x[0], L, sae, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        encode_pool(x, L, sae, backend="cuda")


def test_sae_weights_validation():
    W = torch.randn(8, 12)
    with pytest.raises(ValueError, match="threshold"):
        SAEWeights(W_enc=W, b_enc=torch.zeros(12), activation="jumprelu")
    with pytest.raises(ValueError, match="k"):
        SAEWeights(W_enc=W, b_enc=torch.zeros(12), activation="topk")
    with pytest.raises(ValueError, match="b_enc"):
        SAEWeights(W_enc=W, b_enc=torch.zeros(11))
    with pytest.raises(ValueError, match="W_dec"):
        SAEWeights(W_enc=W, b_enc=torch.zeros(12), W_dec=torch.zeros(8, 12))
    with pytest.raises(ValueError, match="activation"):
        SAEWeights(W_enc=W, b_enc=torch.zeros(12), activation="gelu")
    W[2, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        SAEWeights(W_enc=W, b_enc=torch.zeros(12))
