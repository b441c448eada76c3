"""launch: the modes, segment layout and launch result both Triton strategies share, and the scan operators."""
import pytest
import torch
from conftest import FAST_BACKENDS

from corrsteer_kernels import HAS_TRITON
from corrsteer_kernels.launch import MODE_POOL, MODE_PRE, MODE_STATS, Launch, Segments


def test_modes_are_distinct():
    assert len({MODE_POOL, MODE_STATS, MODE_PRE}) == 3


@pytest.mark.parametrize("lengths", [[3, 0, 1, 2], [1] * 5, [0, 0], [7]])
def test_segments_of(lengths):
    L = torch.tensor(lengths)
    s = Segments.of(L, int(L.sum()))
    assert s.seg.dtype == s.starts.dtype == s.ends.dtype == torch.int32
    assert s.seg.tolist() == [b for b, n in enumerate(lengths) for _ in range(n)]
    assert s.starts.tolist() == [sum(lengths[:b]) for b in range(len(lengths))]
    assert s.ends.tolist() == [sum(lengths[:b + 1]) for b in range(len(lengths))]
    assert torch.equal(s.lengths, L)


def test_launch_fields():
    z = torch.zeros(1)
    assert Launch(None, None, z, z)._fields == ("out", "part", "bnd", "slot")


if HAS_TRITON:
    import triton
    import triton.language as tl

    from corrsteer_kernels.launch import seg_max, seg_sum

    @triton.jit
    def _scan_kernel(v_ptr, f_ptr, out_ptr, N: tl.constexpr, MEAN: tl.constexpr):
        offs = tl.arange(0, N)
        v = tl.load(v_ptr + offs)
        f = tl.load(f_ptr + offs)
        if MEAN:
            z, _ = tl.associative_scan((v, f), 0, seg_sum)
        else:
            z, _ = tl.associative_scan((v, f), 0, seg_max)
        tl.store(out_ptr + offs, z)


@pytest.mark.skipif("triton" not in FAST_BACKENDS, reason="needs triton")
@pytest.mark.parametrize("mean", [False, True])
def test_segmented_scan_operators(mean):
    """A flag restarts the running max / sum; the interpreter runs the same operators the kernels pool with."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(3)
    v = torch.randn(16, generator=g)
    f = torch.zeros(16, dtype=torch.int32)
    f[[0, 3, 4, 11]] = 1
    out = torch.empty(16, device=dev)
    _scan_kernel[(1,)](v.to(dev), f.to(dev), out, N=16, MEAN=mean)
    want, run = [], None
    for i in range(16):
        run = v[i] if f[i] else (run + v[i] if mean else torch.maximum(run, v[i]))
        want.append(float(run))
    torch.testing.assert_close(out.cpu(), torch.tensor(want), rtol=1e-6, atol=1e-6)
