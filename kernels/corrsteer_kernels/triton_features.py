"""What the installed Triton offers the kernels, and which strategies it rules out.

The kernels need Triton >= TRITON_MIN (the oldest release the interpreter tests run on; setup.py declares the same
floor). Two features are newer than some releases in that range and only optional strategies use them:
  - tl.topk (the one-pass TopK kernel, topk_kernel.py): without it TopK runs two-pass (pre-activation cut +
    torch.topk, then the packed kernel);
  - host-side tensor descriptors, triton.tools.tensor_descriptor (TMA loads of the tokens-on-N kernel): without them
    it loads through masked pointers.
A strategy whose feature is missing is unavailable, not broken: require() warns once per strategy and returns False,
and available_strategies() tells a benchmark which strategies this install can run and why not.
"""
from __future__ import annotations

import functools
import warnings

from ._common import HAS_TRITON, tl, triton

try:  # host-side TMA descriptors: newer Triton only
    from triton.tools.tensor_descriptor import TensorDescriptor
except Exception as e:  # pragma: no cover - depends on the install
    TensorDescriptor, _TD_ERROR = None, e

TRITON_MIN = (3, 6)
# strategy -> the features it needs ("triton" = a supported Triton at all)
NEEDS = {"fused": ("triton",), "split": ("triton",), "fused_n": ("triton",), "combine_kernel": ("triton",),
         "fused_n_tma": ("triton", "tensor_descriptor"), "topk_one_pass": ("triton", "tl.topk")}
_WARNED: set = set()


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("+")[0].split(".")[:2] if p.isdigit())


@functools.cache
def features() -> dict[str, str | None]:
    """{feature: None where the install has it, else why not} for "triton", "tl.topk" and "tensor_descriptor"."""
    if not HAS_TRITON:
        return dict.fromkeys(("triton", "tl.topk", "tensor_descriptor"), "Triton is not installed")
    out = {"triton": None if _version(triton.__version__) >= TRITON_MIN else
           f"Triton {triton.__version__} is older than {'.'.join(map(str, TRITON_MIN))}",
           "tl.topk": None if hasattr(tl, "topk") else f"Triton {triton.__version__} has no tl.topk",
           "tensor_descriptor": None if TensorDescriptor is not None else
           f"Triton {triton.__version__} has no host tensor descriptors ({_TD_ERROR!r:.80})"}
    return out


def available_strategies() -> dict[str, str | None]:
    """{strategy: None where this install can run it, else the reason it cannot} for every strategy in NEEDS."""
    f = features()
    return {s: next((f[n] for n in needs if f[n]), None) for s, needs in NEEDS.items()}


def require(strategy: str) -> bool:
    """Whether `strategy` can run here; where not, warn once (per strategy and process) with the reason."""
    why = available_strategies()[strategy]
    if why and strategy not in _WARNED:
        _WARNED.add(strategy)
        warnings.warn(f"corrsteer_kernels: strategy {strategy} unavailable: {why}", stacklevel=2)
    return why is None
