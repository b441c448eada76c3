"""Fail-soft kernel choice: an injected fault (CORRSTEER_FAULT) in one kernel family switches that family off and the
next strategy (or the torch path) gives the float64 reference's answer, with the reason recorded; a forced strategy
raises instead; the tuning key holds the token count bucket."""
import os
import subprocess
import sys

import pytest
import torch
from cases import make_case
from conftest import on_backend

from corrsteer_kernels import (
    CorrStats,
    _common,
    encode_pool,
    encode_pool_reference,
    encode_pool_stats,
    pack_tokens,
    packed_kernel,
)
from corrsteer_kernels._common import (
    InjectedFault,
    KernelFallbackWarning,
    KernelUnavailable,
    family_name,
    fault_point,
    switched_off,
)
from corrsteer_kernels.launch import Segments

ep_module = sys.modules["corrsteer_kernels.encode_pool"]           # the package's name is the function
eps_module = sys.modules["corrsteer_kernels.encode_pool_stats"]

pytestmark = pytest.mark.skipif(not _common.HAS_TRITON or torch.cuda.is_available(),
                                reason="the interpreter's fixed configurations (CPU only)")


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Nothing switched off, no strategy forced, no fault, before and after each test."""
    monkeypatch.setattr(_common, "SWITCHED_OFF", {})
    monkeypatch.setattr(ep_module, "TORCH_FALLBACKS", [])
    monkeypatch.setattr(packed_kernel, "_TUNED", {})
    monkeypatch.setattr(packed_kernel, "_TUNE_TIMES", {})
    for name in ("CORRSTEER_FAULT", "CORRSTEER_DISABLE_KERNELS", "CORRSTEER_PACKED_STRATEGY",
                 "CORRSTEER_TOPK_STRATEGY", "CORRSTEER_COMBINE", "CORRSTEER_TUNE_FUSED_N"):
        monkeypatch.delenv(name, raising=False)


def _case(activation="jumprelu", seed=3):
    x, L, sae = make_case(seed, 5, 9, 24, 40, activation, k=5)
    return (*on_backend("triton", pack_tokens(x, L), L), sae)         # the CPU here (the file is CPU-only)


def _stats(xp, L, sae, pool="max", backend="auto"):
    y = torch.tensor([1.0, -1.0, 2.0, 0.0, 1.0])
    got = encode_pool_stats(xp, L, y, sae, CorrStats(sae.d_sae), pool, backend=backend)
    want = CorrStats(sae.d_sae).update(encode_pool_reference(xp, L, sae, pool).float(), y)
    torch.testing.assert_close(got.sums_at(want.shift), want.features, rtol=1e-5, atol=1e-5)   # shifted sums


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_packed_fault_falls_back_to_split(monkeypatch, pool):
    monkeypatch.setenv("CORRSTEER_FAULT", "fused")              # alias of packed
    xp, L, sae = _case()
    with pytest.warns(KernelFallbackWarning, match="packed kernel failed"):
        got = encode_pool(xp, L, sae, pool, backend="triton")
    torch.testing.assert_close(got.double(), encode_pool_reference(xp, L, sae, pool), rtol=1e-5, atol=1e-5)
    assert "injected compile failure of the packed kernel" in switched_off()["packed"]
    _stats(xp, L, sae, pool, backend="triton")                  # split from the start now: no second warning


def test_forced_strategy_raises(monkeypatch):
    monkeypatch.setenv("CORRSTEER_FAULT", "split:raise")
    monkeypatch.setenv("CORRSTEER_PACKED_STRATEGY", "split")
    xp, L, sae = _case()
    with pytest.raises(InjectedFault, match="split kernel"):
        encode_pool(xp, L, sae, "max", backend="triton")
    assert switched_off() == {}
    monkeypatch.setenv("CORRSTEER_DISABLE_KERNELS", "split")
    with pytest.raises(KernelUnavailable, match="CORRSTEER_PACKED_STRATEGY=split: the split kernel is switched off"):
        encode_pool(xp, L, sae, "max", backend="triton")


def test_every_family_failing_falls_back_to_torch_for_auto(monkeypatch):
    monkeypatch.setenv("CORRSTEER_FAULT", "packed,split,tokens_n")
    monkeypatch.setattr(ep_module, "resolve_backend", lambda backend, device: "triton")   # auto -> triton on a CPU
    monkeypatch.setattr(eps_module, "resolve_backend", lambda backend, device: "triton")
    xp, L, sae = _case()
    with pytest.warns(KernelFallbackWarning):
        _stats(xp, L, sae, "max", backend="auto")
    assert set(switched_off()) == {"packed", "split", "tokens_n"}
    assert "every packed-token strategy" in ep_module.TORCH_FALLBACKS[0]
    with pytest.raises(KernelUnavailable):                      # asked for triton: no silent torch path
        encode_pool(xp, L, sae, "max", backend="triton")


def test_topk_auto_timing_falls_back_to_two_pass(monkeypatch):
    monkeypatch.setenv("CORRSTEER_FAULT", "topk")
    xp, L, sae = _case("topk")
    segs = Segments.of(L, xp.shape[0])
    timer = lambda f: (f(), 1.0)[1]                             # noqa: E731
    with pytest.warns(KernelFallbackWarning, match="topk kernel failed"):
        assert ep_module.one_pass_faster(xp, segs, sae, timer) is False
    assert "injected" in switched_off()["topk"]
    monkeypatch.setenv("CORRSTEER_TOPK_STRATEGY", "one_pass")
    with pytest.raises(KernelUnavailable, match="topk kernel is switched off"):
        encode_pool(xp, L, sae, "max", backend="triton")
    monkeypatch.setenv("CORRSTEER_TOPK_STRATEGY", "auto")       # auto: two passes, right answer
    _stats(xp, L, sae, "max", backend="triton")


def test_topk_auto_timing_without_fault_picks_the_faster(monkeypatch):
    xp, L, sae = _case("topk")
    segs = Segments.of(L, xp.shape[0])
    times = iter([1.0, 2.0])
    assert ep_module.one_pass_faster(xp, segs, sae, lambda f: (f(), next(times))[1]) is True
    assert switched_off() == {}


def test_combine_disabled_raises_when_forced(monkeypatch):
    monkeypatch.setenv("CORRSTEER_COMBINE", "kernel")
    monkeypatch.setenv("CORRSTEER_DISABLE_KERNELS", "combine")
    xp, L, sae = _case()
    with pytest.raises(KernelUnavailable, match="CORRSTEER_COMBINE=kernel: the combine kernel is switched off"):
        encode_pool(xp, L, sae, "max", backend="triton")


def test_tuning_key_has_the_token_bucket_and_failed_families_go_off(monkeypatch):
    monkeypatch.setattr(packed_kernel, "interpreting", lambda: False)
    monkeypatch.setattr(packed_kernel, "split_available", lambda xp, W: True)

    def fake_times(xp, sae, pool, mode, thr_t, cands):
        return ([float("inf") if c.get("SPLIT") else 1.0 + i for i, c in enumerate(cands)],
                ["RuntimeError: no" if c.get("SPLIT") else "" for c in cands])
    monkeypatch.setattr(packed_kernel, "_time_candidates", fake_times)
    _, _, sae = _case()
    for n in (2048, 8192, 2000):
        with pytest.warns(KernelFallbackWarning) if n == 2048 else _no_warning():
            cfg = packed_kernel.config_for(torch.zeros(n, 24), sae, "max", 1, None)
        assert cfg == packed_kernel.TUNE_CONFIGS[0]
    names = list(packed_kernel.tuned_configs())
    assert any("N<=2048" in k for k in names) and any("N<=8192" in k for k in names)
    assert switched_off()["split"] == "RuntimeError: no"
    assert packed_kernel.n_bucket(2048) == 2048 and packed_kernel.n_bucket(2049) == 4096


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fault_point_modes(monkeypatch):
    monkeypatch.setenv("CORRSTEER_FAULT", "combine:explode")
    with pytest.raises(ValueError, match="CORRSTEER_FAULT mode must be one of"):
        fault_point("combine")
    fault_point("packed")                                       # not named: nothing
    with pytest.raises(ValueError, match="unknown kernel family 'gemm'"):
        family_name("gemm")
    code = "from corrsteer_kernels._common import fault_point; fault_point('split')"
    for how, rc in (("abort", -6), ("kill", -9)):
        p = subprocess.run([sys.executable, "-c", code], env={**os.environ, "CORRSTEER_FAULT": f"split:{how}"},
                           capture_output=True, timeout=120)
        assert p.returncode == rc, p.stderr[-500:]


def test_kernel_options_in_one_place(monkeypatch):
    """use_kernel_options chooses for a block; a set CORRSTEER_* variable overrides its field; bad values: one line."""
    from corrsteer_kernels import KernelOptions, kernel_options, use_kernel_options
    assert kernel_options() == KernelOptions()
    xp, L, sae = _case()
    with use_kernel_options(packed_strategy="split", disabled={"fused_n"}) as opts:
        assert kernel_options() == opts and opts.disabled == {"tokens_n"}
        assert packed_kernel.config_for(xp, sae, "max", 1, None) is packed_kernel.split_kernel.INTERPRETER_SPLIT
        monkeypatch.setenv("CORRSTEER_PACKED_STRATEGY", "fused")
        assert kernel_options().packed_strategy == "fused" and kernel_options().disabled == {"tokens_n"}
        monkeypatch.setenv("CORRSTEER_DISABLE_KERNELS", "topk")
        assert kernel_options().disabled == {"tokens_n", "topk"}
    monkeypatch.delenv("CORRSTEER_PACKED_STRATEGY")
    assert kernel_options().packed_strategy == "auto"
    with pytest.raises(ValueError, match=r"KernelOptions.combine must be one of \('torch', 'kernel'\), got 'gpu'"):
        KernelOptions(combine="gpu")
    with pytest.raises(ValueError, match="unknown kernel family 'gemm'"):
        KernelOptions(disabled={"gemm"})
