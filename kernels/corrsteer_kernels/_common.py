"""Backend dispatch and input validation shared by every op.

Backends:
  "reference" — plain float64 torch, materialises everything: the spec.
  "torch"     — the fast CPU path: torch ops, tiled over the dictionary, bounded memory.
  "triton"    — the Triton kernels (CUDA, or the CPU interpreter under TRITON_INTERPRET=1).
  "auto"      — "triton" for CUDA tensors when Triton imports, else "torch".
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import signal
import time
import warnings

import torch

try:  # Triton is optional: the CPU path never needs it.
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
except Exception:  # pragma: no cover - depends on the install
    triton = None
    tl = None
    HAS_TRITON = False

BACKENDS = ("auto", "reference", "torch", "triton")


def interpreting() -> bool:
    """True when Triton runs through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """The environment variable `name` (default when unset), which must be one of choices."""
    s = os.environ.get(name, default)
    if s not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {s!r}")
    return s


# ----------------------------------------------------------------------------------------------------------
# Kernel families: switched off where they failed (fail-soft), and a test-only fault injection
# ----------------------------------------------------------------------------------------------------------
KERNEL_FAMILIES = ("packed", "split", "tokens_n", "topk", "combine")
FAMILY_ALIASES = {"fused": "packed", "fused_n": "tokens_n", "one_pass": "topk"}
FAULT_MODES = ("raise", "abort", "kill", "hang")
SWITCHED_OFF: dict = {}        # family -> why it is off in this process (a failed automatic choice)


class KernelUnavailable(RuntimeError):
    """No kernel strategy is left for a call (each was switched off or failed)."""


class KernelFallbackWarning(RuntimeWarning):
    """A kernel family failed and another strategy (or the torch path) took over (tests turn this into an error)."""


class InjectedFault(RuntimeError):
    """CORRSTEER_FAULT's stand-in for a kernel that fails to compile."""


def family_name(name: str) -> str:
    """The canonical kernel family of a name or alias (fused -> packed, fused_n -> tokens_n, one_pass -> topk)."""
    fam = FAMILY_ALIASES.get(name.strip(), name.strip())
    if fam not in KERNEL_FAMILIES:
        raise ValueError(f"unknown kernel family {name!r}: one of {KERNEL_FAMILIES} (or {tuple(FAMILY_ALIASES)})")
    return fam


def families_from_env(name: str) -> dict:
    """{family: value after ':' or ''} from a comma-separated environment variable (empty when unset)."""
    out = {}
    for item in filter(None, (s.strip() for s in os.environ.get(name, "").split(","))):
        fam, _, how = item.partition(":")
        out[family_name(fam)] = how
    return out


PACKED_STRATEGIES = ("auto", "fused", "split", "fused_n")
TOPK_STRATEGIES = ("two_pass", "one_pass", "auto")
COMBINE_STRATEGIES = ("torch", "kernel")


@dataclasses.dataclass(frozen=True)
class KernelOptions:
    """How the triton path chooses its kernels, in one place (docs/kernels.md "Packed tokens", "TopK",
    "Fail-soft choice").

    packed_strategy: "auto" (the tuner's fastest enabled family), or "fused" / "split" / "fused_n" forced
    topk_strategy:   "two_pass" (the cut from a pre-activation pass), "one_pass" (topk_kernel.py) or "auto" (both
                     timed per shape and token count bucket on a GPU)
    combine:         "torch" (a dozen torch ops) or "kernel" (combine_kernel.py, one launch)
    tune_fused_n:    fused_n among the tuner's candidates under "auto"
    autotune:        False: every shape takes the fixed default configuration (no timing)
    disabled:        kernel families switched off from the start (KERNEL_FAMILIES names or aliases)
    Set for a block with use_kernel_options(...); each CORRSTEER_* variable of ENV_OVERRIDES that is set overrides
    its field (a thin override for benchmarks and tests), read by kernel_options() at every choice."""
    packed_strategy: str = "auto"
    topk_strategy: str = "two_pass"
    combine: str = "torch"
    tune_fused_n: bool = False
    autotune: bool = True
    disabled: frozenset = frozenset()

    def __post_init__(self):
        for name, choices in (("packed_strategy", PACKED_STRATEGIES), ("topk_strategy", TOPK_STRATEGIES),
                              ("combine", COMBINE_STRATEGIES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"KernelOptions.{name} must be one of {choices}, got {getattr(self, name)!r}")
        object.__setattr__(self, "disabled", frozenset(family_name(f) for f in self.disabled))


ENV_OVERRIDES = dict(packed_strategy="CORRSTEER_PACKED_STRATEGY", topk_strategy="CORRSTEER_TOPK_STRATEGY",
                     combine="CORRSTEER_COMBINE", tune_fused_n="CORRSTEER_TUNE_FUSED_N",
                     autotune="CORRSTEER_AUTOTUNE", disabled="CORRSTEER_DISABLE_KERNELS")
_OPTIONS: contextvars.ContextVar = contextvars.ContextVar("corrsteer_kernel_options", default=KernelOptions())


def kernel_options() -> KernelOptions:
    """The options in force: use_kernel_options' innermost (else the defaults), with the ENV_OVERRIDES applied."""
    base, env = _OPTIONS.get(), {}
    for name, choices in (("packed_strategy", PACKED_STRATEGIES), ("topk_strategy", TOPK_STRATEGIES),
                          ("combine", COMBINE_STRATEGIES)):
        if ENV_OVERRIDES[name] in os.environ:
            env[name] = env_choice(ENV_OVERRIDES[name], choices, getattr(base, name))
    if "CORRSTEER_TUNE_FUSED_N" in os.environ:
        env["tune_fused_n"] = os.environ["CORRSTEER_TUNE_FUSED_N"] == "1"
    if "CORRSTEER_AUTOTUNE" in os.environ:
        env["autotune"] = os.environ["CORRSTEER_AUTOTUNE"] != "0"
    off = families_from_env("CORRSTEER_DISABLE_KERNELS")
    if off:
        env["disabled"] = base.disabled | set(off)
    return dataclasses.replace(base, **env) if env else base


@contextlib.contextmanager
def use_kernel_options(**changes):
    """with use_kernel_options(packed_strategy="split", disabled={"topk"}): ... — the options for this block (this
    thread / task); fields not named keep their current values."""
    token = _OPTIONS.set(dataclasses.replace(_OPTIONS.get(), **changes))
    try:
        yield _OPTIONS.get()
    finally:
        _OPTIONS.reset(token)


def switched_off() -> dict:
    """{family: reason} of every kernel family off in this process: KernelOptions.disabled (or
    CORRSTEER_DISABLE_KERNELS, a comma list, e.g. set by bench/gpu.sh from its smoke step) and the families switched
    off after a failure (switch_off)."""
    off = {f: "disabled (KernelOptions.disabled / CORRSTEER_DISABLE_KERNELS)" for f in kernel_options().disabled}
    return {**off, **SWITCHED_OFF}


def kernel_enabled(family: str) -> bool:
    return family_name(family) not in switched_off()


def switch_off(family: str, reason: str) -> None:
    """Switch a kernel family off for this process after it failed (warns once per family)."""
    family = family_name(family)
    if family not in SWITCHED_OFF:
        SWITCHED_OFF[family] = reason[:500]
        warnings.warn(f"corrsteer_kernels: the {family} kernel failed ({reason[:200]}); using another strategy",
                      KernelFallbackWarning, stacklevel=3)


def fault_point(family: str) -> None:
    """Test-only fault injection, called where each kernel family launches. CORRSTEER_FAULT=FAMILY[:HOW][,...]
    (HOW: raise (default; a compile failure), abort (os.abort, as a Triton C++ abort), kill (SIGKILL), hang)
    makes that family fail every time it would launch."""
    how = families_from_env("CORRSTEER_FAULT").get(family, None)
    if how is None:
        return
    how = how or "raise"
    if how not in FAULT_MODES:
        raise ValueError(f"CORRSTEER_FAULT mode must be one of {FAULT_MODES}, got {how!r}")
    if how == "abort":
        os.abort()
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "hang":
        time.sleep(10 ** 6)
    raise InjectedFault(f"CORRSTEER_FAULT: injected compile failure of the {family} kernel")


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if (device.type == "cuda" and HAS_TRITON) else "torch"
    if backend == "triton":
        if not HAS_TRITON:
            raise RuntimeError("backend='triton' needs the `triton` package (pip install triton)")
        if device.type != "cuda" and not interpreting():
            raise RuntimeError(
                "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before corrsteer_kernels is imported"
            )
    return backend


FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_float(name: str, t: torch.Tensor, ndim: int | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float tensor (fp32/fp16/bf16/fp64), got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise on NaN/inf: a NaN would silently poison every statistic downstream."""
    if t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_lengths(lengths: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """Validate per-sample lengths [B] in [0, T]; returns them as int64 on their device."""
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"lengths must have shape [{B}], got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got {lengths.dtype}")
    lengths = lengths.long()
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"lengths must lie in [0, {T}], got min {int(lengths.min())}, max {int(lengths.max())}")
    return lengths


def check_pool(pool: str) -> None:
    if pool not in ("max", "mean"):
        raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype a kernel multiplies in: the common 16-bit type if all agree, else fp32."""
    ds = set(dtypes)
    if len(ds) == 1 and next(iter(ds)) in (torch.float16, torch.bfloat16):
        return next(iter(ds))
    return torch.float32
