"""steer_add_ and steering_vectors against an independent float64 computation, on every backend."""
import zlib

import numpy as np
import pytest
import torch
from conftest import DEVICE, FAST_BACKENDS

from corrsteer_kernels import SAEWeights, steer_add_, steering_vectors

BACKENDS = FAST_BACKENDS + ["reference"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
             torch.float64: torch.int64}


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _bits(t):
    t = t.detach().cpu().contiguous()
    return t.view(_INT_VIEW[t.dtype]) if t.dtype.is_floating_point else t


def _ordered(t):
    """Map floats to integers so that adjacent representable values differ by 1 (+0 and -0 both map to 0)."""
    b = _bits(t).long()
    nbits = torch.finfo(t.dtype).bits
    sign = 1 << (nbits - 1)
    mag = b & (sign - 1)
    return torch.where(b < 0, -mag, mag)


def _expected(hidden, vectors, rows, positions):
    """float64 reimplementation of dtype(float32(hidden[b,t]) + float32(vectors[rows[b]])) where selected.

    The sum of two fp32 values is computed in float64 (53 >= 2*24+2 bits, so rounding that to fp32 equals the fp32
    sum exactly), rounded to fp32, then rounded to hidden's dtype. Returns (expected [B,T,d] CPU, selected [B,T])."""
    h = hidden.detach().cpu()
    B, T, d = h.shape
    v32 = vectors.detach().cpu().float()
    r = np.zeros(B, dtype=np.int64) if rows is None else np.asarray(torch.as_tensor(rows).cpu().numpy(), np.int64)
    p = np.ones((B, T), dtype=bool) if positions is None else positions.cpu().numpy()
    out = h.clone()
    sel = np.zeros((B, T), dtype=bool)
    for b in range(B):
        if r[b] < 0:
            continue
        for t in range(T):
            if p[b, t]:
                s64 = h[b, t].float().double() + v32[r[b]].double()
                out[b, t] = s64.float().to(h.dtype)
                sel[b, t] = True
    return out, torch.from_numpy(sel)


def _rand_hidden(g, B, T, d, dtype):
    h = torch.randn(B, T, d, generator=g) * torch.exp(torch.randn(B, T, 1, generator=g))
    h[torch.rand(B, T, d, generator=g) < 0.05] = 0.0
    h[torch.rand(B, T, d, generator=g) < 0.05] = -0.0
    return h.to(dtype)


def _rand_vectors(g, V, d, dtype=torch.float32):
    v = torch.randn(V, d, generator=g) * torch.logspace(-3, 1, V)[:, None]
    v[torch.rand(V, d, generator=g) < 0.05] = 0.0
    return v.to(dtype)


def _assert_matches(got, exp, sel, exact):
    got = got.detach().cpu()
    assert got.dtype == exp.dtype and got.shape == exp.shape
    unsel = ~sel
    # unselected entries: bit-for-bit unchanged
    assert torch.equal(_bits(got)[unsel], _bits(exp)[unsel])
    if exact:
        assert torch.equal(_bits(got)[sel], _bits(exp)[sel]), \
            f"{int((_bits(got)[sel] != _bits(exp)[sel]).sum())} selected entries differ"
    else:
        diff = (_ordered(got)[sel] - _ordered(exp)[sel]).abs()
        assert diff.numel() == 0 or int(diff.max()) <= 1, f"max ulp difference {int(diff.max())}"


# ----------------------------------------------------------------------------------------------------------------
# correctness sweep
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", [(5, 7, 67), (3, 19, 300)], ids=["5x7x67", "3x19x300"])
@pytest.mark.parametrize("rows_mode", ["none", "with_minus1"])
@pytest.mark.parametrize("pos_mode", ["none", "random"])
def test_steer_add_matches_float64(backend, dtype, shape, rows_mode, pos_mode):
    B, T, d = shape
    seed = zlib.crc32(repr((B, T, d, str(dtype), rows_mode, pos_mode)).encode())
    g = torch.Generator().manual_seed(seed)
    V = 4
    hidden = _rand_hidden(g, B, T, d, dtype)
    vectors = _rand_vectors(g, V, d)
    rows = None
    if rows_mode == "with_minus1":
        rows = torch.randint(-1, V, (B,), generator=g)
        rows[0], rows[1] = -1, V - 1
    positions = None
    if pos_mode == "random":
        positions = torch.rand(B, T, generator=g) < 0.6
        positions[-1, :] = False  # a row with nothing selected
    exp, sel = _expected(hidden, vectors, rows, positions)
    assert 0 < int(sel.sum()) < B * T or (rows is None and positions is None)
    assert not torch.equal(exp, hidden)

    h = hidden.to(DEVICE)
    out = steer_add_(h, vectors.to(DEVICE), None if rows is None else rows.to(DEVICE),
                     None if positions is None else positions.to(DEVICE), backend=backend)
    assert out is h
    # Exact everywhere (the Triton kernel rounds fp32 -> bf16 to nearest even by hand under the interpreter,
    # whose own conversion truncates: see test_steer_add_bf16_rounds_to_nearest).
    _assert_matches(h, exp, sel, exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vdtype", [torch.float16, torch.bfloat16, torch.float64], ids=["fp16", "bf16", "fp64"])
def test_steer_add_vector_dtypes(backend, vdtype):
    g = torch.Generator().manual_seed(77)
    B, T, d = 4, 5, 67
    hidden = _rand_hidden(g, B, T, d, torch.float32)
    vectors = (torch.randn(3, d, generator=g, dtype=torch.float64) * 3).to(vdtype)
    rows = torch.tensor([2, -1, 0, 1])
    exp, sel = _expected(hidden, vectors, rows, None)
    h = hidden.to(DEVICE)
    steer_add_(h, vectors.to(DEVICE), rows.to(DEVICE), backend=backend)
    _assert_matches(h, exp, sel, exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_steer_add_rows_none_uses_vector_zero_and_rows_as_list(backend):
    g = torch.Generator().manual_seed(78)
    hidden = _rand_hidden(g, 3, 4, 33, torch.float32)
    vectors = _rand_vectors(g, 3, 33)
    exp0, sel0 = _expected(hidden, vectors, torch.zeros(3, dtype=torch.long), None)
    h = hidden.clone().to(DEVICE)
    steer_add_(h, vectors.to(DEVICE), backend=backend)
    _assert_matches(h, exp0, sel0, exact=True)
    exp1, sel1 = _expected(hidden, vectors, [2, -1, 1], None)
    h = hidden.clone().to(DEVICE)
    steer_add_(h, vectors.to(DEVICE), [2, -1, 1], backend=backend)  # python list of ints
    _assert_matches(h, exp1, sel1, exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_steer_add_in_place_on_non_contiguous_view(backend):
    """hidden as a [B, T, d] view of a [T, B, d] buffer: the op writes through the view and returns it."""
    g = torch.Generator().manual_seed(79)
    B, T, d = 3, 18, 70
    base = _rand_hidden(g, T, B, d, torch.float32).to(DEVICE)
    base0 = base.clone()
    hidden = base.transpose(0, 1)
    assert not hidden.is_contiguous()
    vectors = _rand_vectors(g, 2, d)
    rows = torch.tensor([1, -1, 0])
    positions = torch.rand(B, T, generator=g) < 0.5
    exp, sel = _expected(base0.transpose(0, 1), vectors, rows, positions)
    ptr = hidden.data_ptr()
    out = steer_add_(hidden, vectors.to(DEVICE), rows.to(DEVICE), positions.to(DEVICE), backend=backend)
    assert out is hidden and out.data_ptr() == ptr
    _assert_matches(base.transpose(0, 1), exp, sel, exact=True)


# ----------------------------------------------------------------------------------------------------------------
# rounding edge cases (deterministic)
# ----------------------------------------------------------------------------------------------------------------
def _double_rounding_case(dtype):
    """hidden = 1.0 and a fp32 vector entry v chosen so that 1 + v lies just above a dtype midpoint by less than
    half an fp32 ulp: the documented formula dtype(float32(h) + float32(v)) rounds to fp32 first (an exact tie), then
    ties-to-even gives 1.0; rounding the exact sum once gives 1 + ulp."""
    mant = {torch.float16: 10, torch.bfloat16: 7}[dtype]  # explicit mantissa bits
    v = 2.0 ** -(mant + 1) + 2.0 ** -(mant + 1 + 23)
    assert float(torch.tensor(v, dtype=torch.float32)) == v  # exactly representable in fp32
    return v


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_steer_add_documented_double_rounding(backend, dtype):
    # Pins the documented two-step rounding. (The reference gets it because torch's float64 -> fp16/bf16 cast goes
    # through fp32; a single correctly rounded float64 -> 16-bit cast, e.g. numpy's, would give 1 + ulp here.)
    v = _double_rounding_case(dtype)
    hidden = torch.ones(1, 2, 4, dtype=dtype)
    vectors = torch.full((1, 4), v, dtype=torch.float32)
    exp, sel = _expected(hidden, vectors, None, None)
    assert torch.equal(exp, hidden)  # the documented formula: the tie goes to even, 1.0
    h = hidden.to(DEVICE)
    steer_add_(h, vectors.to(DEVICE), backend=backend)
    assert torch.equal(h.cpu(), exp), h.cpu().flatten()[:2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_steer_add_bf16_rounds_to_nearest(backend):
    # bf16 spacing is 2^-7 above 1 and 2^-8 below it.
    # 1 + 3/4 * 2^-7: round-to-nearest gives 1 + 2^-7, truncation gives 1.
    # 1 - 1/4 * 2^-8: round-to-nearest gives 1, truncation (toward zero) gives 1 - 2^-8.
    hidden = torch.ones(2, 3, 5, dtype=torch.bfloat16)
    vectors = torch.tensor([[0.75 * 2.0 ** -7] * 5, [-0.25 * 2.0 ** -8] * 5], dtype=torch.float32)
    rows = torch.tensor([0, 1])
    exp, sel = _expected(hidden, vectors, rows, None)
    assert exp[0, 0, 0].item() == 1 + 2.0 ** -7 and exp[1, 0, 0].item() == 1.0
    h = hidden.to(DEVICE)
    steer_add_(h, vectors.to(DEVICE), rows.to(DEVICE), backend=backend)
    assert torch.equal(h.cpu(), exp), h.cpu()[:, 0, 0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_steer_add_rejects_fp64_hidden(backend):
    hidden = torch.randn(2, 3, 67, dtype=torch.float64, device=DEVICE)
    with pytest.raises(TypeError, match="float64"):
        steer_add_(hidden, torch.randn(1, 67, device=DEVICE), backend=backend)


# ----------------------------------------------------------------------------------------------------------------
# empty shapes
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B,T", [(0, 5), (3, 0), (0, 0)])
@pytest.mark.parametrize("with_args", [False, True])
def test_steer_add_empty(backend, B, T, with_args):
    d = 67
    hidden = torch.empty(B, T, d, dtype=torch.float32, device=DEVICE)
    vectors = torch.ones(2, d, device=DEVICE)
    rows = torch.full((B,), 1, dtype=torch.long, device=DEVICE) if with_args else None
    positions = torch.ones(B, T, dtype=torch.bool, device=DEVICE) if with_args else None
    out = steer_add_(hidden, vectors, rows, positions, backend=backend)
    assert out is hidden and out.shape == (B, T, d)


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------
def _err_inputs(g):
    hidden = _rand_hidden(g, 3, 4, 67, torch.float32).to(DEVICE)
    vectors = _rand_vectors(g, 2, 67).to(DEVICE)
    return hidden, vectors


_BAD = {
    "rows_too_big": (ValueError, lambda h, v: dict(rows=torch.tensor([0, 2, 1]))),
    "rows_below_minus1": (ValueError, lambda h, v: dict(rows=torch.tensor([0, -2, 1]))),
    "rows_float": (ValueError, lambda h, v: dict(rows=torch.tensor([0.0, 1.0, 1.0]))),
    "rows_bool": (ValueError, lambda h, v: dict(rows=torch.tensor([True, False, True]))),
    "rows_wrong_len": (ValueError, lambda h, v: dict(rows=torch.tensor([0, 1]))),
    "rows_2d": (ValueError, lambda h, v: dict(rows=torch.tensor([[0, 1, 1]]))),
    "positions_wrong_shape": (ValueError, lambda h, v: dict(positions=torch.ones(3, 5, dtype=torch.bool))),
    "positions_transposed": (ValueError, lambda h, v: dict(positions=torch.ones(4, 3, dtype=torch.bool))),
    "positions_uint8": (ValueError, lambda h, v: dict(positions=torch.ones(3, 4, dtype=torch.uint8))),
    "positions_float": (ValueError, lambda h, v: dict(positions=torch.ones(3, 4))),
    "vectors_narrow": (ValueError, lambda h, v: dict(vectors=v[:, :66])),
    "vectors_wide": (ValueError, lambda h, v: dict(vectors=torch.ones(2, 68))),
    "vectors_empty": (ValueError, lambda h, v: dict(vectors=torch.ones(0, 67))),
    "vectors_1d": (ValueError, lambda h, v: dict(vectors=v[0])),
    "vectors_nan": (ValueError, lambda h, v: dict(vectors=torch.where(torch.arange(67, device=v.device) == 5,
                                                                      float("nan"), v))),
    "vectors_inf": (ValueError, lambda h, v: dict(vectors=torch.where(torch.arange(67, device=v.device) == 66,
                                                                      float("-inf"), v))),
    "vectors_int": (TypeError, lambda h, v: dict(vectors=torch.ones(2, 67, dtype=torch.long))),
    "hidden_2d": (ValueError, lambda h, v: dict(hidden=h[0])),
    "hidden_int": (TypeError, lambda h, v: dict(hidden=torch.ones(3, 4, 67, dtype=torch.int32))),
    "bad_backend": (ValueError, lambda h, v: dict(backend="cuda")),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(_BAD))
def test_steer_add_errors(backend, case):
    g = torch.Generator().manual_seed(90)
    hidden, vectors = _err_inputs(g)
    exc, make = _BAD[case]
    kw = dict(hidden=hidden, vectors=vectors, rows=torch.tensor([0, -1, 1]), positions=None, backend=backend)
    over = make(hidden, vectors)
    for k in ("rows", "positions", "vectors"):
        if k in over and isinstance(over[k], torch.Tensor):
            over[k] = over[k].to(DEVICE)
    kw.update(over)
    h0 = kw["hidden"].clone()
    with pytest.raises(exc):
        steer_add_(**kw)
    assert torch.equal(_bits(kw["hidden"]), _bits(h0))  # nothing written
    # sanity: the same call with the good argument works and changes hidden
    good = dict(hidden=hidden, vectors=vectors, rows=torch.tensor([0, -1, 1], device=DEVICE), positions=None,
                backend=backend)
    steer_add_(**good)
    assert not torch.equal(hidden.cpu(), h0.cpu()) or case.startswith("hidden")


# ----------------------------------------------------------------------------------------------------------------
# steering_vectors
# ----------------------------------------------------------------------------------------------------------------
def _w_dec(g, d_sae=23, d_in=37, dtype=torch.float32):
    return (torch.randn(d_sae, d_in, generator=g) * 2).to(dtype)


def _expected_vectors(W, feats, coefs):
    """feats/coefs: python lists of lists; -1 = padding. float64 sums, cast to fp32."""
    Wd = W.detach().cpu().double().numpy()
    out = np.zeros((len(feats), Wd.shape[1]))
    for v, (fs, cs) in enumerate(zip(feats, coefs)):
        for f, c in zip(fs, cs):
            if f >= 0:
                out[v] += float(c) * Wd[f]
    return torch.from_numpy(out).float()


def _check_vectors(got, exp):
    assert got.dtype == torch.float32 and got.shape == exp.shape
    assert exp.abs().max() > 0
    torch.testing.assert_close(got.cpu(), exp, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("wdtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64],
                         ids=["fp32", "fp16", "bf16", "fp64"])
@pytest.mark.parametrize("as_sae", [False, True])
def test_steering_vectors_1d(wdtype, as_sae):
    g = torch.Generator().manual_seed(101)
    W = _w_dec(g, dtype=wdtype).to(DEVICE)
    src = SAEWeights(W_enc=torch.zeros(37, 23, device=DEVICE), b_enc=torch.zeros(23, device=DEVICE), W_dec=W) \
        if as_sae else W
    feats = torch.tensor([3, 0, 22, 3, 11])
    coefs = torch.tensor([1.5, -2.0, 0.25, 7.0, -0.1], dtype=torch.float64)
    got = steering_vectors(src, feats, coefs)
    _check_vectors(got, _expected_vectors(W, [[f] for f in feats.tolist()], [[c] for c in coefs.tolist()]))
    # python lists (flat) give the same
    got2 = steering_vectors(src, feats.tolist(), coefs.tolist())
    assert torch.equal(got2, got)


@pytest.mark.parametrize("as_sae", [False, True])
def test_steering_vectors_padded_2d(as_sae):
    g = torch.Generator().manual_seed(102)
    W = _w_dec(g).to(DEVICE)
    src = SAEWeights(W_enc=torch.zeros(37, 23, device=DEVICE), b_enc=torch.zeros(23, device=DEVICE), W_dec=W) \
        if as_sae else W
    feats = torch.tensor([[1, 5, -1, -1], [22, 22, 0, 7], [-1, -1, -1, -1], [4, -1, 9, -1]])
    coefs = torch.randn(4, 4, generator=g, dtype=torch.float64) * 3  # nonzero junk in padding slots: ignored
    got = steering_vectors(src, feats, coefs)
    exp = _expected_vectors(W, feats.tolist(), coefs.tolist())
    _check_vectors(got, exp)
    assert torch.equal(got[2], torch.zeros(37, device=got.device))  # all padding -> zero vector
    # int32 indices and fp32 coefficients accepted too
    got32 = steering_vectors(src, feats.int(), coefs.float())
    _check_vectors(got32, _expected_vectors(W, feats.tolist(), coefs.float().double().tolist()))


def test_steering_vectors_ragged_lists():
    g = torch.Generator().manual_seed(103)
    W = _w_dec(g).to(DEVICE)
    feats = [[2], [7, 3, 7], [], [0, 22], 5]
    coefs = [[0.5], [1.0, -3.0, 0.125], [], [2.0, -1.0], 4.0]
    got = steering_vectors(W, feats, coefs)
    exp = _expected_vectors(W, [[2], [7, 3, 7], [], [0, 22], [5]], [[0.5], [1.0, -3.0, 0.125], [], [2.0, -1.0], [4.0]])
    _check_vectors(got, exp)
    assert torch.equal(got[2], torch.zeros(37, device=got.device))


@pytest.mark.parametrize("feats,coefs", [
    (torch.tensor([0, 23]), torch.tensor([1.0, 1.0])),
    (torch.tensor([0, -2]), torch.tensor([1.0, 1.0])),
    (torch.tensor([[0, 23], [1, -1]]), torch.ones(2, 2)),
    ([[0, 1], [100]], [[1.0, 1.0], [1.0]]),
    ([[-5]], [[1.0]]),
], ids=["1d_high", "1d_minus2", "2d_high", "list_high", "list_neg"])
def test_steering_vectors_invalid_feature_raises(feats, coefs):
    g = torch.Generator().manual_seed(104)
    with pytest.raises(ValueError):
        steering_vectors(_w_dec(g).to(DEVICE), feats, coefs)


def test_steering_vectors_no_w_dec_raises():
    sae = SAEWeights(W_enc=torch.zeros(37, 23), b_enc=torch.zeros(23))
    with pytest.raises(ValueError):
        steering_vectors(sae, torch.tensor([1]), torch.tensor([1.0]))
    with pytest.raises(ValueError):
        steering_vectors(None, torch.tensor([1]), torch.tensor([1.0]))


@pytest.mark.parametrize("feats,coefs", [
    (torch.tensor([[0, 1]]), torch.tensor([1.0, 2.0])),
    (torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0])),
    ([[0, 1], [2]], [[1.0], [2.0]]),
], ids=["2d_vs_1d", "len", "ragged_structure"])
def test_steering_vectors_structure_mismatch_raises(feats, coefs):
    g = torch.Generator().manual_seed(105)
    with pytest.raises(ValueError):
        steering_vectors(_w_dec(g), feats, coefs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_steering_vectors_non_finite_coefficient_raises(bad):
    g = torch.Generator().manual_seed(106)
    with pytest.raises(ValueError):
        steering_vectors(_w_dec(g), torch.tensor([1, 2]), torch.tensor([1.0, bad]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_steering_vectors_feed_steer_add(backend):
    g = torch.Generator().manual_seed(107)
    W = _w_dec(g, d_sae=11, d_in=67).to(DEVICE)
    vecs = steering_vectors(W, torch.tensor([[1, -1], [4, 9]]), torch.tensor([[2.0, 0.0], [-1.0, 0.5]]))
    hidden = _rand_hidden(g, 3, 5, 67, torch.bfloat16)
    rows = torch.tensor([1, -1, 0])
    exp, sel = _expected(hidden, vecs, rows, None)
    h = hidden.to(DEVICE)
    steer_add_(h, vecs, rows.to(DEVICE), backend=backend)
    _assert_matches(h, exp, sel, exact=(backend != "triton"))


def test_steering_vectors_float_feature_indices_raise():
    with pytest.raises(TypeError, match="integer"):
        steering_vectors(torch.randn(10, 8), torch.tensor([1.7]), torch.tensor([1.0]))
