"""Microbenchmarks (pytest-benchmark): `pytest bench/ --benchmark-only` (not part of the default `pytest`, whose
testpaths is tests/). One CPU shape: 576 -> 16384 JumpReLU, 1024 ragged tokens, fp32; the op and the GEMM of the
same packed tokens, comparable across runs with --benchmark-save / --benchmark-compare."""
import pytest
import torch

from bench.common import random_sae
from corrsteer_kernels import CorrStats, encode_pool, encode_pool_stats

D_IN, D_SAE, N = 576, 16384, 1024


@pytest.fixture(scope="module")
def case():
    g = torch.Generator().manual_seed(0)
    L = torch.randint(1, 33, (N // 16,), generator=g)
    xp = torch.randn(int(L.sum()), D_IN, generator=g)
    y = (torch.rand(L.numel(), generator=g) > 0.5).float()
    return xp, L, y, random_sae(D_IN, D_SAE, "jumprelu")


def test_gemm(benchmark, case):
    xp, _, _, sae = case
    buf = torch.empty(xp.shape[0], D_SAE)
    benchmark(torch.mm, xp, sae.W_enc, out=buf)


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_encode_pool_stats(benchmark, case, pool):
    xp, L, y, sae = case
    stats = CorrStats(D_SAE)
    benchmark(encode_pool_stats, xp, L, y, sae, stats, pool, check=False)


def test_encode_pool(benchmark, case):
    xp, L, _, sae = case
    out = torch.empty(L.numel(), D_SAE)
    benchmark(encode_pool, xp, L, sae, "max", out=out)
