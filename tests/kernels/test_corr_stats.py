"""CorrStats / feature_sums against an independent float64 recomputation (numpy + math.fsum)."""
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from corrsteer_kernels import FEATURE_FIELDS, SCALAR_FIELDS, CorrStats
from corrsteer_kernels.corr_stats import feature_sums


# ----------------------------------------------------------------------------------------------------------------
# independent recomputation
# ----------------------------------------------------------------------------------------------------------------
def _concat(batches):
    """batches: list of (z [B, d] tensor, y [B] tensor/list) -> (Z float64 [N, d], Y float64 [N]) numpy arrays."""
    d = batches[0][0].shape[1]
    Z = np.concatenate([np.asarray(z.double().cpu().numpy(), dtype=np.float64).reshape(-1, d) for z, _ in batches])
    Y = np.concatenate([np.asarray(torch.as_tensor(y).double().cpu().numpy(), dtype=np.float64).reshape(-1)
                        for _, y in batches])
    return Z, Y


def _expected(Z, Y):
    """Per-field float64 expected values and an absolute error scale (sum of |terms|) for each.

    Returns {field: (value, abs_scale)} for every FEATURE_FIELD ([d] arrays) and SCALAR_FIELD (python floats).
    """
    N, d = Z.shape
    pos = Y > 0
    terms = {
        "sum_z": Z,
        "sum_z2": Z * Z,
        "sum_zy": Z * Y[:, None],
        "sum_z_pos": Z * pos[:, None],
        "n_active": (Z > 0).astype(np.float64),
        "n_active_pos": ((Z > 0) & pos[:, None]).astype(np.float64),
        "sum_z_active_pos": np.where((Z > 0) & pos[:, None], Z, 0.0),
    }
    out = {}
    for name, t in terms.items():
        val = np.array([math.fsum(t[:, j]) for j in range(d)], dtype=np.float64)
        out[name] = (val, np.abs(t).sum(0))
    out["n"] = (float(N), float(N))
    out["sum_y"] = (math.fsum(Y), float(np.abs(Y).sum()))
    out["sum_y2"] = (math.fsum(Y * Y), float((Y * Y).sum()))
    out["n_pos"] = (float(pos.sum()), float(pos.sum()))
    return out


def _pearson_expected(Z, Y):
    """Two-pass centred Pearson r per feature; 0 where either side is constant (exactly, by inspection)."""
    N, d = Z.shape
    r = np.zeros(d)
    if N < 2 or np.all(Y == Y[0]):
        return r
    yc = Y - Y.mean()
    for j in range(d):
        z = Z[:, j]
        if np.all(z == z[0]):
            continue
        zc = z - z.mean()
        r[j] = float(zc @ yc) / math.sqrt(float(zc @ zc) * float(yc @ yc))
    return r


RAW_FIELDS = ("sum_z", "sum_z2", "sum_zy") + FEATURE_FIELDS[3:]   # the raw sums (the first three derived)


def _assert_fields(stats, exp, rtol=1e-12):
    for name in RAW_FIELDS + SCALAR_FIELDS:
        val, scale = exp[name]
        got = getattr(stats, name).cpu().numpy()
        assert got.dtype == np.float64, name
        # rtol on the value, plus float64 rounding relative to the sum of |terms| (cancellation in sums with negatives)
        np.testing.assert_allclose(got, val, rtol=rtol, atol=1e-13 * np.max(scale) + 0.0, err_msg=name)
        if name in ("n_active", "n_active_pos", "n", "n_pos"):
            np.testing.assert_array_equal(got, val, err_msg=name)


def _rand_z(g, B, d, zero_frac=0.3, scale=1.0, offset=0.0):
    z = torch.randn(B, d, generator=g, dtype=torch.float64) * scale + offset
    z[torch.rand(B, d, generator=g) < zero_frac] = 0.0
    return z


def _rand_y(g, B, kind):
    if kind == "binary":
        return (torch.rand(B, generator=g) < 0.5).double()
    if kind == "real":  # negative, positive and exact zero scores
        y = torch.randn(B, generator=g, dtype=torch.float64) * 2.0 - 0.3
        y[torch.rand(B, generator=g) < 0.15] = 0.0
        return y
    raise AssertionError(kind)


# ----------------------------------------------------------------------------------------------------------------
# update: every field against the recomputation
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 37, 101])
@pytest.mark.parametrize("ykind", ["binary", "real"])
@pytest.mark.parametrize("zdtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_update_fields_match_recomputation(d, ykind, zdtype):
    g = torch.Generator().manual_seed(1000 + d + (7 if ykind == "real" else 0))
    sizes = [1, 9, 0, 17, 1, 5]
    batches = []
    stats = CorrStats(d)
    for B in sizes:
        z = _rand_z(g, B, d, scale=3.0).to(zdtype)
        y = _rand_y(g, B, ykind)
        batches.append((z, y))
        assert stats.update(z, y) is stats
    exp = _expected(*_concat(batches))
    assert exp["n_pos"][0] > 0 and np.abs(exp["sum_z"][0]).max() > 0  # non-trivial data
    _assert_fields(stats, exp)
    assert stats.features.shape == (len(FEATURE_FIELDS), d)
    assert stats.scalars.shape == (len(SCALAR_FIELDS),)


@pytest.mark.parametrize("d", [37, 101])
def test_feature_sums_match_recomputation(d):
    g = torch.Generator().manual_seed(d)
    z = _rand_z(g, 23, d, scale=2.0).float()
    y = _rand_y(g, 23, "real")
    got = feature_sums(z, y)
    assert got.dtype == torch.float64 and got.shape == (len(FEATURE_FIELDS), d)
    exp = _expected(*_concat([(z, y)]))
    for i, name in enumerate(RAW_FIELDS):        # shift None: the first three are raw sums
        val, scale = exp[name]
        np.testing.assert_allclose(got[i].numpy(), val, rtol=1e-12, atol=1e-13 * scale.max(), err_msg=name)


def test_feature_sums_empty_batch_is_zero_shaped():
    got = feature_sums(torch.zeros(0, 5), torch.zeros(0))
    assert got.shape == (len(FEATURE_FIELDS), 5)
    assert torch.equal(got, torch.zeros(len(FEATURE_FIELDS), 5, dtype=torch.float64))


@pytest.mark.parametrize("ykind", ["binary", "real"])
def test_empty_batch_is_a_noop(ykind):
    g = torch.Generator().manual_seed(5)
    stats = CorrStats(37)
    stats.update(_rand_z(g, 8, 37), _rand_y(g, 8, ykind))
    f0, s0 = stats.features.clone(), stats.scalars.clone()
    assert f0.abs().sum() > 0 and s0[0] == 8
    stats.update(torch.zeros(0, 37), torch.zeros(0))
    stats.update(torch.zeros(0, 37, dtype=torch.float16), [])
    assert torch.equal(stats.features, f0) and torch.equal(stats.scalars, s0)


@pytest.mark.parametrize("yform", ["bool", "int", "list", "float32"])
def test_y_forms_equal_float64(yform):
    g = torch.Generator().manual_seed(11)
    z = _rand_z(g, 12, 37)
    y = (torch.rand(12, generator=g) < 0.5)
    yy = {"bool": y, "int": y.long(), "list": [int(v) for v in y], "float32": y.float()}[yform]
    a = CorrStats(37).update(z, y.double())
    b = CorrStats(37).update(z, yy)
    assert a.scalars[3] > 0
    assert torch.equal(a.features, b.features) and torch.equal(a.scalars, b.scalars)


# ----------------------------------------------------------------------------------------------------------------
# pearson
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [37, 101])
@pytest.mark.parametrize("ykind", ["binary", "real"])
def test_pearson_matches_corrcoef(d, ykind):
    g = torch.Generator().manual_seed(200 + d)
    stats = CorrStats(d)
    batches = []
    for B in (3, 11, 1, 20):
        # features correlated with y to get r values spread over [-1, 1]
        y = _rand_y(g, B, ykind)
        w = torch.linspace(-3, 3, d, dtype=torch.float64)
        z = _rand_z(g, B, d, zero_frac=0.2) + w[None, :] * y[:, None]
        batches.append((z, y))
        stats.update(z, y)
    Z, Y = _concat(batches)
    exp = _pearson_expected(Z, Y)
    got = stats.pearson()
    assert got.dtype == torch.float64 and got.shape == (d,)
    np.testing.assert_allclose(got.numpy(), exp, rtol=0, atol=1e-10)
    # cross-check the recomputation itself against numpy.corrcoef
    np.testing.assert_allclose(exp, np.corrcoef(Z.T, Y)[-1, :-1], rtol=0, atol=1e-10)
    assert np.abs(exp).max() > 0.5 and exp.min() < -0.5  # actually spread
    assert bool((got >= -1).all()) and bool((got <= 1).all())


@pytest.mark.parametrize("const", [0.0, 0.1, 3.7, -2.5, 1e-3, 1e6])
def test_pearson_constant_feature_is_zero(const):
    g = torch.Generator().manual_seed(3)
    d = 5
    stats = CorrStats(d)
    for B in (4, 9, 1):
        z = _rand_z(g, B, d, zero_frac=0.0)
        z[:, 2] = const
        stats.update(z, _rand_y(g, B, "real"))
    r = stats.pearson()
    assert not bool(torch.isnan(r).any())
    assert r[2].item() == 0.0
    assert bool((r[[0, 1, 3, 4]] != 0).all())  # other features untouched by the guard


@pytest.mark.parametrize("yconst", [0.0, 1.0, 0.1, -3.3])
def test_pearson_constant_y_is_zero(yconst):
    g = torch.Generator().manual_seed(4)
    stats = CorrStats(37)
    for B in (6, 13):
        stats.update(_rand_z(g, B, 37), torch.full((B,), yconst, dtype=torch.float64))
    assert stats.sum_z2.abs().max() > 0
    r = stats.pearson()
    assert not bool(torch.isnan(r).any())
    assert torch.equal(r, torch.zeros(37, dtype=torch.float64))


def test_pearson_empty_and_single_sample_is_zero():
    stats = CorrStats(7)
    assert torch.equal(stats.pearson(), torch.zeros(7, dtype=torch.float64))
    stats.update(torch.arange(1.0, 8.0)[None, :], [1.0])
    r = stats.pearson()
    assert not bool(torch.isnan(r).any()) and torch.equal(r, torch.zeros(7, dtype=torch.float64))


@pytest.mark.parametrize("ykind", ["binary", "real"])
def test_pearson_feature_equal_to_plus_minus_y(ykind):
    g = torch.Generator().manual_seed(8)
    d = 6
    stats = CorrStats(d)
    for B in (5, 12, 1):
        y = _rand_y(g, B, ykind)
        z = _rand_z(g, B, d)
        z[:, 0] = y
        z[:, 1] = -y
        z[:, 2] = 2.5 * y + 7.0   # affine in y: still r = 1
        z[:, 3] = -0.25 * y - 1.0
        stats.update(z, y)
    r = stats.pearson()
    np.testing.assert_allclose(r[:4].numpy(), [1.0, -1.0, 1.0, -1.0], rtol=0, atol=1e-12)
    assert bool((r.abs() <= 1).all())


def test_pearson_within_bounds_near_perfect_correlation():
    g = torch.Generator().manual_seed(9)
    d = 101
    stats = CorrStats(d)
    for B in (7, 30):
        y = _rand_y(g, B, "real") * 1e3 + 1e4
        eps = torch.logspace(-14, -2, d, dtype=torch.float64)
        z = y[:, None] * torch.where(torch.arange(d) % 2 == 0, 1.0, -1.0).double() \
            + eps * torch.randn(B, d, generator=g, dtype=torch.float64)
        stats.update(z, y)
    r = stats.pearson()
    assert bool((r >= -1).all()) and bool((r <= 1).all())
    assert r[0] > 0.999999 and r[1] < -0.999999


# ----------------------------------------------------------------------------------------------------------------
# merge
# ----------------------------------------------------------------------------------------------------------------
def _stats_of(batches, d):
    s = CorrStats(d)
    for z, y in batches:
        s.update(z, y)
    return s


def _batches(g, d, sizes, ykind="real"):
    return [(_rand_z(g, B, d, scale=2.0), _rand_y(g, B, ykind)) for B in sizes]


@pytest.mark.parametrize("ykind", ["binary", "real"])
def test_merge_equals_sequential_feed(ykind):
    g = torch.Generator().manual_seed(21)
    d = 37
    A, Bb = _batches(g, d, [4, 1, 9], ykind), _batches(g, d, [7, 0, 3], ykind)
    a, b = _stats_of(A, d), _stats_of(Bb, d)
    seq = _stats_of(A + Bb, d)
    assert a.merge(b) is a
    # same per-batch sums, associated differently: equal up to float64 rounding
    scale = float(seq.features.abs().max())
    assert scale > 0
    torch.testing.assert_close(a.features, seq.features, rtol=1e-12, atol=1e-13 * scale)
    torch.testing.assert_close(a.scalars, seq.scalars, rtol=1e-12, atol=1e-13 * float(seq.scalars.abs().max()))
    torch.testing.assert_close(a.pearson(), seq.pearson(), rtol=0, atol=1e-12)
    _assert_fields(a, _expected(*_concat(A + Bb)))
    assert not torch.equal(b.features, a.features)  # other untouched and different
    np.testing.assert_array_equal(b.n.numpy(), 10.0)


def test_merge_associative():
    g = torch.Generator().manual_seed(22)
    d = 101
    parts = [_batches(g, d, s) for s in ([3, 8], [1], [12, 5])]
    ab_c = _stats_of(parts[0], d).merge(_stats_of(parts[1], d)).merge(_stats_of(parts[2], d))
    bc = _stats_of(parts[1], d).merge(_stats_of(parts[2], d))
    a_bc = _stats_of(parts[0], d).merge(bc)
    scale = ab_c.features.abs().max()
    assert scale > 0
    torch.testing.assert_close(ab_c.features, a_bc.features, rtol=1e-12, atol=1e-12 * float(scale))
    torch.testing.assert_close(ab_c.scalars, a_bc.scalars, rtol=1e-12, atol=1e-12 * float(ab_c.scalars.abs().max()))
    torch.testing.assert_close(ab_c.pearson(), a_bc.pearson(), rtol=0, atol=1e-12)
    _assert_fields(ab_c, _expected(*_concat(parts[0] + parts[1] + parts[2])))


def test_merge_mismatched_d_sae_raises():
    g = torch.Generator().manual_seed(23)
    a = CorrStats(37).update(_rand_z(g, 4, 37), _rand_y(g, 4, "real"))
    f0 = a.features.clone()
    with pytest.raises(ValueError):
        a.merge(CorrStats(38))
    with pytest.raises(ValueError):
        a.merge("not stats")
    assert torch.equal(a.features, f0)


# ----------------------------------------------------------------------------------------------------------------
# conditional means
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ykind", ["binary", "real"])
def test_conditional_means(ykind):
    g = torch.Generator().manual_seed(31)
    d = 37
    batches = []
    for B in (6, 1, 15, 0, 4):
        z = _rand_z(g, B, d, scale=2.0)
        y = _rand_y(g, B, ykind)
        # feature 0: positive only where y <= 0, negative where y > 0 -> never active among positives
        z[:, 0] = torch.where(y > 0, -1.5 - torch.rand(B, generator=g, dtype=torch.float64), 2.0)
        batches.append((z, y))
    stats = _stats_of(batches, d)
    Z, Y = _concat(batches)
    pos = Y > 0
    assert pos.sum() > 0
    exp_mgp = Z[pos].mean(0)
    exp_magp = np.zeros(d)
    for j in range(d):
        act = Z[pos, j][Z[pos, j] > 0]
        exp_magp[j] = act.mean() if act.size else 0.0
    mgp, magp = stats.mean_given_positive(), stats.mean_active_given_positive()
    assert mgp.dtype == torch.float64 and magp.dtype == torch.float64
    np.testing.assert_allclose(mgp.numpy(), exp_mgp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(magp.numpy(), exp_magp, rtol=1e-12, atol=1e-14)
    assert magp[0].item() == 0.0 and mgp[0].item() < -1.0  # feature 0: inactive among positives
    assert bool((magp[1:] > 0).all())


def test_conditional_means_without_positives_are_zero():
    g = torch.Generator().manual_seed(32)
    d = 37
    stats = CorrStats(d)
    for B in (5, 8):
        y = -torch.rand(B, generator=g, dtype=torch.float64)  # all <= 0
        y[0] = 0.0
        stats.update(_rand_z(g, B, d, zero_frac=0.0).abs() + 0.5, y)
    assert stats.sum_z.min() > 0 and stats.n_pos.item() == 0
    mgp, magp = stats.mean_given_positive(), stats.mean_active_given_positive()
    assert not bool(torch.isnan(mgp).any()) and not bool(torch.isnan(magp).any())
    assert torch.equal(mgp, torch.zeros(d, dtype=torch.float64))
    assert torch.equal(magp, torch.zeros(d, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------------
# persistence
# ----------------------------------------------------------------------------------------------------------------
def _filled(seed=41, d=37):
    g = torch.Generator().manual_seed(seed)
    return _stats_of(_batches(g, d, [5, 9, 1]), d)


def test_state_dict_safetensors_round_trip(tmp_path):
    stats = _filled()
    sd = stats.state_dict()
    assert set(sd) == set(FEATURE_FIELDS + SCALAR_FIELDS + ("shift", "format"))
    assert all(t.dtype == torch.float64 and t.is_contiguous() for t in sd.values())
    path = tmp_path / "stats.safetensors"
    save_file(sd, str(path))
    loaded = load_file(str(path))
    back = CorrStats(37).load_state_dict(loaded)
    assert torch.equal(back.features, stats.features) and torch.equal(back.scalars, stats.scalars)
    assert torch.equal(back.pearson(), stats.pearson())
    assert back.pearson().abs().max() > 0
    back2 = CorrStats.from_state_dict(loaded)
    assert back2.d_sae == 37 and torch.equal(back2.features, stats.features)
    assert torch.equal(back2.scalars, stats.scalars)
    # state_dict is a copy: mutating the stats afterwards leaves it alone
    f_before = sd["sum_dz"].clone()
    stats.update(torch.ones(2, 37), [1.0, 0.0])
    assert torch.equal(sd["sum_dz"], f_before)


def test_load_state_dict_missing_key_raises():
    sd = _filled().state_dict()
    for key in ("sum_dzy", "n_pos", "shift"):
        bad = dict(sd)
        del bad[key]
        with pytest.raises(KeyError):
            CorrStats(37).load_state_dict(bad)


@pytest.mark.parametrize("shape", [(36,), (38,), (1, 37), ()])
def test_load_state_dict_wrong_feature_shape_raises(shape):
    sd = _filled().state_dict()
    sd["sum_dz2"] = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(ValueError):
        CorrStats(37).load_state_dict(sd)
    with pytest.raises(ValueError):
        CorrStats(38).load_state_dict(_filled().state_dict())


@pytest.mark.parametrize("shape", [(3,), (37,)])
def test_load_state_dict_wrong_scalar_shape_raises(shape):
    sd = _filled().state_dict()
    sd["n"] = torch.full(shape, 5.0, dtype=torch.float64)
    with pytest.raises(ValueError):
        CorrStats(37).load_state_dict(sd)


def test_failed_load_leaves_stats_unchanged():
    target = _filled(seed=42)
    f0, s0 = target.features.clone(), target.scalars.clone()
    sd = _filled(seed=43).state_dict()
    sd["sum_z_active_pos"] = torch.zeros(36, dtype=torch.float64)  # last feature field is bad
    with pytest.raises(ValueError):
        target.load_state_dict(sd)
    assert torch.equal(target.features, f0) and torch.equal(target.scalars, s0)


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["pooled", "y"])
@pytest.mark.parametrize("pdtype", [torch.float32, torch.float16])
def test_non_finite_raises(bad, where, pdtype):
    g = torch.Generator().manual_seed(51)
    stats = CorrStats(37).update(_rand_z(g, 4, 37), _rand_y(g, 4, "real"))
    f0, s0 = stats.features.clone(), stats.scalars.clone()
    z = _rand_z(g, 6, 37).to(pdtype)
    y = _rand_y(g, 6, "real")
    if where == "pooled":
        z[3, 17] = bad
    else:
        y[2] = bad
    with pytest.raises(ValueError):
        stats.update(z, y)
    assert torch.equal(stats.features, f0) and torch.equal(stats.scalars, s0)  # nothing accumulated


@pytest.mark.parametrize("zshape,yshape", [
    ((6,), (6,)),            # pooled 1-D
    ((2, 3, 37), (2,)),      # pooled 3-D
    ((6, 36), (6,)),         # wrong d_sae
    ((6, 38), (6,)),
    ((6, 37), (5,)),         # y length mismatch
    ((6, 37), (7,)),
    ((6, 37), (6, 1)),       # y 2-D
    ((6, 37), ()),           # y scalar
])
def test_wrong_shapes_raise(zshape, yshape):
    stats = CorrStats(37)
    with pytest.raises(ValueError):
        stats.update(torch.ones(zshape), torch.ones(yshape))
    assert stats.scalars[0].item() == 0.0


def test_non_float_pooled_raises_type_error():
    with pytest.raises(TypeError):
        CorrStats(3).update(torch.ones(2, 3, dtype=torch.long), [1, 0])


@pytest.mark.parametrize("d_sae", [0, -1, 2.5])
def test_bad_d_sae_raises(d_sae):
    with pytest.raises(ValueError):
        CorrStats(d_sae)
