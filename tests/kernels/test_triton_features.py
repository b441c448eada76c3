"""Triton feature checks: a strategy whose feature the installed Triton lacks is unavailable (one warning, and
available_strategies says why), and the op falls back instead of failing to compile."""
import importlib
import warnings

import pytest
import torch
from cases import make_case
from conftest import FAST_BACKENDS, on_backend

from corrsteer_kernels import encode_pool, encode_pool_reference, pack_tokens

tf = importlib.import_module("corrsteer_kernels.triton_features")
tn = importlib.import_module("corrsteer_kernels.tokens_n_kernel")
tk = importlib.import_module("corrsteer_kernels.topk_kernel")
needs_triton = pytest.mark.skipif("triton" not in FAST_BACKENDS, reason="needs triton")


@pytest.fixture
def fresh(monkeypatch):
    """Forget the cached features and warnings (here and after the test)."""
    monkeypatch.setattr(tf, "_WARNED", set())
    tf.features.cache_clear()
    yield
    tf.features.cache_clear()


@needs_triton
def test_this_install_has_every_feature(fresh):
    import triton
    assert tf.available_strategies() == dict.fromkeys(tf.NEEDS)
    assert tf._version(triton.__version__) >= tf.TRITON_MIN


@needs_triton
def test_missing_topk_makes_one_pass_unavailable(fresh, monkeypatch):
    monkeypatch.delattr(tf.tl, "topk")
    monkeypatch.setenv("CORRSTEER_TOPK_STRATEGY", "one_pass")
    why = tf.available_strategies()
    assert why["topk_one_pass"].endswith("has no tl.topk") and why["fused"] is None
    with pytest.warns(UserWarning, match="strategy topk_one_pass unavailable: Triton .* has no tl.topk"):
        assert tk.topk_strategy() == "two_pass"
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # warned once only
        assert tk.topk_strategy() == "two_pass"
    L = [5, 1, 0, 16, 2]
    x, L, sae = make_case(91, len(L), max(L), 24, 40, "topk", lengths=L, k=5)
    ref = encode_pool_reference(x, L, sae, "max")
    xp, Ld, sd = on_backend("triton", pack_tokens(x, L), L, sae)
    got = encode_pool(xp, Ld, sd, "max", backend="triton")      # two-pass: no tl.topk compiled
    torch.testing.assert_close(got.cpu().double(), ref, rtol=2e-5, atol=2e-5)


@needs_triton
def test_missing_descriptors_make_tma_unavailable(fresh, monkeypatch):
    monkeypatch.setattr(tf, "TensorDescriptor", None)
    monkeypatch.setattr(tf, "_TD_ERROR", ImportError("gone"), raising=False)
    assert "has no host tensor descriptors" in tf.available_strategies()["fused_n_tma"]
    with pytest.warns(UserWarning, match="strategy fused_n_tma unavailable"):
        assert tf.require("fused_n_tma") is False
    assert tf.require("fused_n") is True


def test_too_old_triton_rules_out_every_strategy(fresh, monkeypatch):
    monkeypatch.setattr(tf, "HAS_TRITON", True)
    monkeypatch.setattr(tf, "triton", type("T", (), {"__version__": "3.2.0"}))
    monkeypatch.setattr(tf, "tl", object())
    why = tf.available_strategies()
    assert why["fused"] == "Triton 3.2.0 is older than 3.6" and why["topk_one_pass"] == why["fused"]
