"""Counting host syncs: how often a piece of code makes the host wait for the device.

    n = count_host_syncs(fn)        # CUDA: synchronizing CUDA calls counted by torch's sync debug mode; CPU: None
    ops = sync_points(fn)           # any device: the ops in fn that would sync on a GPU (best effort, see below)

count_host_syncs is the measurement (torch.cuda.set_sync_debug_mode("warn") warns once per synchronizing call).
sync_points is a proxy that also works on the CPU, for tests: it records the ops that read device values back to the
host or need data-dependent output sizes (item / bool / int / tolist / .cpu() / numpy, nonzero, masked_select,
boolean-mask indexing, unique, repeat_interleave without output_size). It does not see copies between host and
device written as .to(device) (on the CPU it cannot tell them from no-ops), nor ops that sync inside a C++ kernel
without one of these names.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_SYNC_METHODS = {"tolist", "numpy", "cpu"}     # item / bool / int / float show up as aten._local_scalar_dense
_SYNC_ATEN = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique", "_unique2",
              "unique_consecutive", "unique_dim"}


def host_sync_warnings(fn: Callable[[], object]) -> list:
    """The warnings CUDA's sync debug mode raises while fn() runs, one per synchronizing call (CUDA only)."""
    torch.cuda.synchronize()
    old = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(old)
    return [w for w in caught if "synchroniz" in str(w.message).lower()]


def count_host_syncs(fn: Callable[[], object], device=None) -> int | None:
    """The number of synchronizing CUDA calls fn() makes; None when CUDA is not available (or device is not cuda)."""
    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return None
    return len(host_sync_warnings(fn))


class _FunctionSpy(TorchFunctionMode):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _SYNC_METHODS:
            self.log.append(name)
        return func(*args, **(kwargs or {}))


class _DispatchSpy(TorchDispatchMode):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        kwargs = kwargs or {}
        if name in _SYNC_ATEN:
            self.log.append(name)
        elif name in ("index", "index_put", "index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
            self.log.append(f"{name}(bool mask)")
        elif name == "repeat_interleave" and kwargs.get("output_size") is None and isinstance(args[-1], torch.Tensor):
            self.log.append(name)
        return func(*args, **kwargs)


def sync_points(fn: Callable[[], object]) -> list[str]:
    """The names of the ops in fn() that would make the host wait on a GPU (see the module docstring)."""
    log: list[str] = []
    with _FunctionSpy(log), _DispatchSpy(log):
        fn()
    return log
