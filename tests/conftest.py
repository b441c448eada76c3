"""Test setup: without CUDA, Triton kernels run through the CPU interpreter (must be set before triton loads)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import corrsteer_kernels  # noqa: E402  (after TRITON_INTERPRET is set)

# Backends every op is tested on: the fast CPU path always, Triton when it can run here.
FAST_BACKENDS = ["torch"] + (["triton"] if corrsteer_kernels.HAS_TRITON else [])
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA (skipped without it)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def on_backend(backend, *objs):
    """Move tensors / SAEWeights to where `backend` runs: CUDA for Triton on a GPU machine, else stay on the CPU."""
    dev = "cuda" if (backend == "triton" and torch.cuda.is_available()) else "cpu"
    out = tuple(o.to(dev) if o is not None else None for o in objs)
    return out if len(out) > 1 else out[0]
