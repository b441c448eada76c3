"""Microbenchmarks (pytest-benchmark): `pytest bench/ --benchmark-only` (not part of the default `pytest`, whose
testpaths is tests/); save with --benchmark-save=NAME, compare runs with --benchmark-compare. CPU, fp32, at
N = 2048 tokens (what collection passes per layer) and 8192: 576 -> 16384 JumpReLU (the offline default's d_in) and
576 -> 2304 TopK k = 32, ragged lengths 1..32 and one token per sample; each op beside the GEMM of the same packed
tokens (torch.mm into a preallocated output). test_paired_ratio times the GEMM and the op back to back in every
round (pytest-benchmark's rounds), so its extra_info holds the per-round ratio's median and spread, which the
separate timings (taken minutes apart on a shared machine) cannot give."""
import statistics
import time

import pytest
import torch

from bench.common import random_sae
from corrsteer_kernels import CorrStats, encode_pool, encode_pool_stats

SHAPES = {"d576-16k": (576, 16384, "jumprelu", None), "topk-2304": (576, 2304, "topk", 32)}
CASES = [(shape, n, pattern) for n in (2048, 8192) for shape in SHAPES for pattern in ("ragged", "one")]
IDS = [f"{s}-N{n}-{p}" for s, n, p in CASES]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def case(request):
    shape, n, pattern = request.param
    d_in, d_sae, act, k = SHAPES[shape]
    g = torch.Generator().manual_seed(n)
    L = torch.ones(n, dtype=torch.long) if pattern == "one" else torch.randint(1, 33, (round(n / 16.5),), generator=g)
    xp = torch.randn(int(L.sum()), d_in, generator=g)
    y = (torch.rand(L.numel(), generator=g) > 0.5).float()
    sae = random_sae(d_in, d_sae, act, k=k)
    return dict(xp=xp, L=L, y=y, sae=sae, gemm_out=torch.empty(xp.shape[0], d_sae), stats=CorrStats(d_sae),
                pooled=torch.empty(L.numel(), d_sae))


def gemm(c):
    return torch.mm(c["xp"], c["sae"].W_enc, out=c["gemm_out"])


def fused(c, pool):
    return encode_pool_stats(c["xp"], c["L"], c["y"], c["sae"], c["stats"], pool, check=False)


def test_gemm(benchmark, case):
    benchmark(gemm, case)


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_encode_pool_stats(benchmark, case, pool):
    benchmark(fused, case, pool)


def test_encode_pool(benchmark, case):
    benchmark(encode_pool, case["xp"], case["L"], case["sae"], "max", out=case["pooled"])


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_paired_ratio(benchmark, case, pool):
    """One round = the GEMM, then the fused op; the benchmark's time is the pair's, extra_info the ratio's."""
    ratios = []

    def pair():
        t0 = time.perf_counter()
        gemm(case)
        t1 = time.perf_counter()
        fused(case, pool)
        ratios.append((time.perf_counter() - t1) / (t1 - t0))
    benchmark.pedantic(pair, rounds=7, warmup_rounds=1)
    ratios = ratios[1:]            # the warm-up round
    benchmark.extra_info.update(ratio_median=statistics.median(ratios), ratio_min=min(ratios),
                                ratio_max=max(ratios), ratios=ratios)
