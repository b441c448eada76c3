"""Cancellation-free statistics (corr_stats: shifted sums): Pearson r of features whose pooled value varies little
relative to its mean, against a two-pass float64 recomputation, on every backend; merges of stats accumulated under
different shifts; the checkpoint format (round trip, format-1 states converted, unknown formats refused).

The pooled values are planted exactly: an identity SAE (W_enc = I, relu) on one token per sample pools x itself."""
import math

import numpy as np
import pytest
import torch
from conftest import FAST_BACKENDS, on_backend
from safetensors.torch import load_file, save_file

from corrsteer_kernels import CorrStats, encode_pool_stats
from corrsteer_kernels.rank_stats import RankStats
from corrsteer_kernels.sae_weights import SAEWeights

BACKENDS = ["reference"] + FAST_BACKENDS


def pearson64(z: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Two-pass centred float64 Pearson r of every column of z [B, F] with y [B]."""
    Z, Y = z.double().numpy(), y.double().numpy()
    zc, yc = Z - Z.mean(0), Y - Y.mean()
    return (zc * yc[:, None]).sum(0) / np.sqrt((zc * zc).sum(0) * (yc * yc).sum())


def planted(means, cv: float, B: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [B, F] fp32 > 0, y [B]): feature j ~ means[j] (1 + cv N(0, 1)), y correlated with feature 0."""
    g = torch.Generator().manual_seed(seed)
    m = torch.tensor(means, dtype=torch.float64)
    noise = torch.randn(B, len(means), generator=g, dtype=torch.float64)
    y = noise[:, 0] + torch.randn(B, generator=g, dtype=torch.float64)
    return (m * (1 + cv * noise)).float(), y


def fused_stats(z: torch.Tensor, y: torch.Tensor, backend: str, batch: int | None = None) -> CorrStats:
    """encode_pool_stats of one-token samples with x = z through the identity SAE (pooled = z exactly)."""
    B, F = z.shape
    sae = SAEWeights(W_enc=torch.eye(F), b_enc=torch.zeros(F))
    x, L, y, sae = on_backend(backend, z, torch.ones(B, dtype=torch.long), y, sae)
    st = CorrStats(F, device=x.device)
    step = batch or B
    for i in range(0, B, step):
        encode_pool_stats(x[i:i + step], L[i:i + step], y[i:i + step], sae, st, "max", backend=backend)
    return st


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_samples_differing_by_a_fraction_of_their_mean(backend):
    """The issue's case: 2 samples whose pooled values differ by 0.3% of their mean give r = -1 (fp32 raw sums gave
    -0.988)."""
    means = torch.tensor([5.0, 1.0, 37.0, 1000.0, 0.01])
    z = torch.stack([means, means * 1.003]).float()
    r = fused_stats(z, torch.tensor([1.0, 0.0]), backend).pearson().cpu()
    torch.testing.assert_close(r, torch.full_like(r, -1.0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_4096_one_token_samples_mean_5_sd_0_01(backend):
    """The issue's case: mean 5, sd 0.01 (fp32 raw sums gave 0.3126 against 0.3101)."""
    g = torch.Generator().manual_seed(0)
    z = (5 + 0.01 * torch.randn(4096, 3, generator=g)).float()
    y = (z[:, 0].double() - 5) * 100 + torch.randn(4096, generator=g, dtype=torch.float64)     # scores: mean ~ 0
    r = fused_stats(z, y, backend).pearson().cpu().numpy()
    np.testing.assert_allclose(r, pearson64(z, y), rtol=0, atol=1e-6)
    assert abs(r[0]) > 0.3


@pytest.mark.parametrize("cv", [1e-1, 1e-2, 1e-3, 1e-4])
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_hundred_thousand_samples_small_cv(backend, cv):
    """10^5 samples streamed in batches of 25000 (one shift, set by the first batch), CV down to 1e-4."""
    z, y = planted([5.0, 0.2, 300.0, 7e4], cv, 100_000, seed=int(cv * 1e4))
    r = fused_stats(z, y, backend, batch=25_000).pearson().cpu().numpy()
    np.testing.assert_allclose(r, pearson64(z, y), rtol=0, atol=1e-6)


@pytest.mark.skipif("triton" not in FAST_BACKENDS, reason="needs triton")
@pytest.mark.parametrize("strategy, combine", [("fused", "torch"), ("fused", "kernel"), ("split", "torch"),
                                               ("fused_n", "kernel")])
def test_triton_strategies_small_cv(monkeypatch, strategy, combine):
    """Every Triton strategy's per-tile shifted sums (16-token tiles under the interpreter) at CV 1e-4, samples of
    several tokens across tile edges (crossing samples folded by torch or the combine kernel)."""
    monkeypatch.setenv("CORRSTEER_PACKED_STRATEGY", strategy)
    monkeypatch.setenv("CORRSTEER_COMBINE", combine)
    z, y = planted([5.0, 300.0, 0.5], 1e-4, 256, seed=3)
    r = fused_stats(z, y, "triton").pearson().cpu().numpy()
    np.testing.assert_allclose(r, pearson64(z, y), rtol=0, atol=1e-6)
    L = torch.tensor([3, 1, 20, 0, 7] * 8)                   # pooled by max over several tokens (~z + tiny)
    x = z[:L.sum()].clone()
    sae = SAEWeights(W_enc=torch.eye(3), b_enc=torch.zeros(3))
    ref = CorrStats(3).update(torch.stack([x[a:b].amax(0) if b > a else torch.zeros(3) for a, b in
                                           zip((L.cumsum(0) - L).tolist(), L.cumsum(0).tolist())]), y[:40])
    xd, Ld, yd, sd = on_backend("triton", x, L, y[:40], sae)
    st = encode_pool_stats(xd, Ld, yd, sd, CorrStats(3, device=xd.device), "max", backend="triton")
    np.testing.assert_allclose(st.pearson().cpu().numpy(), ref.pearson().numpy(), rtol=0, atol=1e-6)


def test_merge_of_stats_with_different_shifts():
    """Batches whose means differ (so do their shifts) merged in either order and through an empty stats equal one
    float64 pass; the raw sums derived from the shifted ones equal math.fsum."""
    z1, y1 = planted([5.0, 50.0], 1e-4, 3000, seed=1)
    z2, y2 = planted([5.001, 49.99], 1e-4, 5000, seed=2)
    a, b = CorrStats(2).update(z1, y1), CorrStats(2).update(z2, y2)
    assert not torch.equal(a.shift, b.shift)
    z, y = torch.cat([z1, z2]), torch.cat([y1, y2])
    want = pearson64(z, y)
    ab = CorrStats(2).merge(a).merge(b)
    ba = CorrStats(2).merge(b).merge(a)
    np.testing.assert_allclose(ab.pearson().numpy(), want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ba.pearson().numpy(), want, rtol=0, atol=1e-9)
    assert torch.equal(ab.shift, a.shift) and torch.equal(ba.shift, b.shift)
    Z = z.double().numpy()
    np.testing.assert_allclose(ab.sum_z.numpy(), [math.fsum(Z[:, j]) for j in range(2)], rtol=1e-13)
    np.testing.assert_allclose(ab.sum_z2.numpy(), [math.fsum(Z[:, j] ** 2) for j in range(2)], rtol=1e-13)
    rk = RankStats(2).update(z1, y1).merge(RankStats(2).update(z2, y2))
    np.testing.assert_allclose(rk.pearson().numpy(), want, rtol=0, atol=1e-9)


def test_rebase_moves_the_shift_and_keeps_the_statistics():
    z, y = planted([5.0, 0.3], 1e-3, 500, seed=4)
    st = CorrStats(2).update(z, y)
    r, raw = st.pearson(), st.sum_z2.clone()
    st.rebase_to(st.shift + torch.tensor([0.001, -0.0002], dtype=torch.float64))
    torch.testing.assert_close(st.pearson(), r, rtol=0, atol=1e-9)
    torch.testing.assert_close(st.sum_z2, raw, rtol=1e-14, atol=0)


def test_checkpoint_round_trip_and_old_format(tmp_path):
    from corrsteer_kernels.corr_stats import STATE_FORMAT
    z, y = planted([5.0, 0.3, 80.0], 1e-3, 700, seed=5)
    st = CorrStats(3).update(z, y)
    save_file(st.state_dict(), str(tmp_path / "s.safetensors"))
    back = CorrStats.from_state_dict(load_file(str(tmp_path / "s.safetensors")))
    assert torch.equal(back.features, st.features) and torch.equal(back.shift, st.shift)
    assert torch.equal(back.pearson(), st.pearson())
    # format 1 (no "format", raw sums sum_z / sum_z2 / sum_zy): converted, the shift moved to the mean
    old = {k: v for k, v in st.state_dict().items() if k not in ("format", "shift", "sum_dz", "sum_dz2", "sum_dzy")}
    old.update(sum_z=st.sum_z.clone(), sum_z2=st.sum_z2.clone(), sum_zy=st.sum_zy.clone())
    conv = CorrStats(3).load_state_dict(old)
    np.testing.assert_allclose(conv.pearson().numpy(), pearson64(z, y), rtol=0, atol=1e-7)
    torch.testing.assert_close(conv.shift, (st.sum_z / 700).float().double())
    conv.update(z, y)                                          # and keeps accumulating on the converted shift
    np.testing.assert_allclose(conv.pearson().numpy(), pearson64(torch.cat([z, z]), torch.cat([y, y])), atol=1e-7)
    bad = st.state_dict()
    bad["format"] = torch.tensor([float(STATE_FORMAT + 1)], dtype=torch.float64)
    with pytest.raises(ValueError, match=f"format {float(STATE_FORMAT + 1)}, this version reads {STATE_FORMAT}"):
        CorrStats(3).load_state_dict(bad)
