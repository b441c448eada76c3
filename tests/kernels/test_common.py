"""_common: backend resolution and the input checks every op shares."""
import pytest
import torch

from corrsteer_kernels._common import (
    BACKENDS,
    HAS_TRITON,
    check_finite,
    check_float,
    check_lengths,
    check_pool,
    compute_dtype,
    interpreting,
    resolve_backend,
)


def test_resolve_backend():
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("reference", torch.device("cpu")) == "reference"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("fast", torch.device("cpu"))
    if HAS_TRITON and interpreting():
        assert resolve_backend("triton", torch.device("cpu")) == "triton"
    assert set(BACKENDS) == {"auto", "reference", "torch", "triton"}


def test_interpreting_reads_the_environment(monkeypatch):
    for value, want in [("1", True), ("true", True), ("0", False), ("", False)]:
        monkeypatch.setenv("TRITON_INTERPRET", value)
        assert interpreting() is want


def test_check_float():
    check_float("x", torch.zeros(2, 3), 2)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        check_float("x", [1.0])
    with pytest.raises(TypeError, match="float tensor"):
        check_float("x", torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="must have 3 dims"):
        check_float("x", torch.zeros(2, 3), 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_finite(bad):
    check_finite("x", torch.zeros(0))
    t = torch.zeros(5)
    t[3] = bad
    with pytest.raises(ValueError, match="1 non-finite"):
        check_finite("x", t)


def test_check_lengths():
    assert check_lengths([0, 3, 2], 3, 3).tolist() == [0, 3, 2]
    assert check_lengths(torch.tensor([1], dtype=torch.int32), 1, 1).dtype == torch.int64
    with pytest.raises(ValueError, match="shape"):
        check_lengths(torch.tensor([1, 2]), 3, 4)
    with pytest.raises(TypeError, match="integer"):
        check_lengths(torch.tensor([1.0]), 1, 4)
    with pytest.raises(TypeError, match="integer"):
        check_lengths(torch.tensor([True]), 1, 4)
    with pytest.raises(ValueError, match=r"lie in \[0, 4\]"):
        check_lengths(torch.tensor([5]), 1, 4)
    with pytest.raises(ValueError, match=r"lie in \[0, 4\]"):
        check_lengths(torch.tensor([-1]), 1, 4)


def test_check_pool_and_compute_dtype():
    check_pool("max")
    check_pool("mean")
    with pytest.raises(ValueError, match="pool must be"):
        check_pool("sum")
    assert compute_dtype(torch.bfloat16, torch.bfloat16) == torch.bfloat16
    assert compute_dtype(torch.float16) == torch.float16
    assert compute_dtype(torch.bfloat16, torch.float16) == torch.float32
    assert compute_dtype(torch.float32, torch.bfloat16) == torch.float32
