"""The boundary combine kernel (combine_kernel.py) against the torch combine on the same launch of the packed kernel
(16-token tiles under the interpreter) and against the float64 reference: samples over one edge and over several
tiles, empty and one-token samples between them, max and mean, pooled and folded into existing statistics."""
import pytest
import torch
from cases import make_case
from conftest import FAST_BACKENDS, on_backend

from corrsteer_kernels import CorrStats, encode_pool_reference, pack_tokens
from corrsteer_kernels.combine_kernel import combine_launch, combine_strategy
from corrsteer_kernels.launch import MODE_POOL, MODE_STATS, Segments
from corrsteer_kernels.packed_kernel import boundary_feature_sums, combine_boundary, packed_encode

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
    feats = combine_launch(launch, segs, pool, MODE_STATS, y=y, features=start.clone())
    torch_sums = launch.part.sum(0) + boundary_feature_sums(launch, pool, L, y)
    torch.testing.assert_close(feats, start + torch_sums, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(feats.cpu() - start.cpu(), CorrStats(40).update(ref, y.cpu()).features,
                               rtol=1e-5, atol=1e-5)


def test_combine_strategy_switch(monkeypatch):
    assert combine_strategy() == "torch"
    monkeypatch.setenv("CORRSTEER_COMBINE", "atomic")
    with pytest.raises(ValueError, match=r"CORRSTEER_COMBINE must be one of \('torch', 'kernel'\)"):
        combine_strategy()
