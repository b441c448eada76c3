"""The boundary combine kernel (combine_kernel.py) against the torch combine on the same launch of the packed kernel
(16-token tiles under the interpreter) and against the float64 reference: samples over one edge and over several
tiles, empty and one-token samples between them, max and mean, pooled and folded into existing statistics."""
import importlib

import pytest
import torch
from cases import make_case
from conftest import FAST_BACKENDS, on_backend

from corrsteer_kernels import CorrStats, encode_pool_reference, encode_pool_stats, pack_tokens
from corrsteer_kernels.combine_kernel import combine_launch, combine_strategy
from corrsteer_kernels.corr_stats import fold_parts, zero_sums
from corrsteer_kernels.launch import MODE_POOL, MODE_STATS, Segments
from corrsteer_kernels.packed_kernel import boundary_feature_sums, combine_boundary, packed_encode
from corrsteer_kernels.prepared import prepare_batch

cb = importlib.import_module("corrsteer_kernels.combine_kernel")
tn = importlib.import_module("corrsteer_kernels.tokens_n_kernel")
tk = importlib.import_module("corrsteer_kernels.topk_kernel")
LENGTHS = {"spans": [40, 0, 3, 17, 1, 1, 0, 33, 2], "edges": [16, 16, 15, 1, 17], "inside": [3, 0, 5, 1]}


@pytest.mark.skipif("triton" not in FAST_BACKENDS, reason="needs triton")
@pytest.mark.parametrize("pattern", list(LENGTHS))
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_combine_kernel_equals_torch_combine_and_reference(pattern, pool):
    L = LENGTHS[pattern]
    x, L, sae = make_case(80 + len(L), len(L), max(L), 24, 40, "jumprelu", lengths=L)
    ref = encode_pool_reference(x, L, sae, pool)
    y = torch.arange(len(L)).remainder(3).double() - 0.5
    xp, L, y, sae = on_backend("triton", pack_tokens(x, L), L, y, sae)
    segs = Segments.of(L, xp.shape[0])

    out = torch.zeros((L.shape[0], 40), device=xp.device)
    launch = packed_encode(xp, segs, sae, pool, MODE_POOL, out=out)
    want = out.clone()
    samples, z = combine_boundary(launch, pool, L)
    want[samples] = z
    combine_launch(launch, segs, pool, MODE_POOL, out=out)
    assert torch.equal(out, want)
    torch.testing.assert_close(out.cpu().double(), ref, rtol=2e-5, atol=2e-5)

    launch = packed_encode(xp, segs, sae, pool, MODE_STATS, y=y)
    start = torch.rand(7, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(xp.device)
    want = CorrStats(40).update(ref, y.cpu())
    shift = want.shift.to(xp.device) + 0.25          # any shift (not the tiles' own)
    feats = combine_launch(launch, segs, pool, MODE_STATS, y=y, features=start.clone(), shift=shift)
    torch_sums = fold_parts(launch.part, shift) + boundary_feature_sums(launch, pool, L, y, shift)
    torch.testing.assert_close(feats, start + torch_sums, rtol=1e-12, atol=1e-12)
    empty = zero_sums(*prepare_batch(L, y).empty_samples(), shift)       # length-0 samples: seen by no tile
    torch.testing.assert_close((feats + empty).cpu() - start.cpu(), want.sums_at(shift.cpu()), rtol=1e-5, atol=1e-5)


def test_combine_strategy_switch(monkeypatch):
    assert combine_strategy() == "torch"
    monkeypatch.setenv("CORRSTEER_COMBINE", "atomic")
    with pytest.raises(ValueError, match=r"CORRSTEER_COMBINE must be one of \('torch', 'kernel'\)"):
        combine_strategy()


class _Counted:
    """A Triton kernel wrapper that records each launch, then runs it."""
    def __init__(self, kernel, name, log):
        self.kernel, self.name, self.log = kernel, name, log

    def __getitem__(self, grid):
        self.log.append(self.name)
        return self.kernel[grid]


@pytest.mark.skipif("triton" not in FAST_BACKENDS, reason="needs triton")
@pytest.mark.parametrize("activation, env", [("jumprelu", {"CORRSTEER_PACKED_STRATEGY": "fused_n"}),
                                             ("topk", {"CORRSTEER_TOPK_STRATEGY": "one_pass"})])
def test_triton_launches_per_call(monkeypatch, activation, env):
    """By construction: the new kernels take two Triton launches per encode_pool_stats call (the encode kernel, one
    row chunk here as at collection's sizes, and the combine, which also reduces the per-tile sums), and no zeroing
    of the slots; the rest of the call is per-batch torch work (segments, chunk edges, y, scalar sums)."""
    log = []
    for mod, name in [(tn, "_tokens_n_kernel"), (tk, "_topk_pool_kernel"), (cb, "_combine_kernel")]:
        monkeypatch.setattr(mod, name, _Counted(getattr(mod, name), name, log))
    for k, v in {**env, "CORRSTEER_COMBINE": "kernel"}.items():
        monkeypatch.setenv(k, v)
    L = [5, 1, 0, 16, 2, 1, 9, 0, 31, 3]
    x, L, sae = make_case(90, len(L), max(L), 24, 40, activation, lengths=L, k=5)
    y = torch.arange(len(L)).remainder(2).double()
    want = CorrStats(40).update(encode_pool_reference(x, L, sae, "max"), y)
    xp, L, y, sae = on_backend("triton", pack_tokens(x, L), L, y, sae)
    st = encode_pool_stats(xp, L, y, sae, CorrStats(40, device=xp.device), "max", backend="triton", check=False)
    assert len(log) == 2 and log[-1] == "_combine_kernel", log
    torch.testing.assert_close(st.sums_at(want.shift).cpu(), want.features, rtol=1e-5, atol=1e-5)
