"""Hook points on the residual stream: sae-lens hook names <-> decoder-layer inputs and outputs.

sae-lens names the residual stream `blocks.L.hook_resid_pre` (the input of decoder layer L) and
`blocks.L.hook_resid_post` (the output of decoder layer L = the input of layer L+1). CorrSteer applies each SAE
at the hook it was trained on (the paper's code hooks the input of layer L for an SAE trained on its output; we don't).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

import torch

_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


@dataclass(frozen=True)
class HookPoint:
    layer: int
    point: str  # "pre" (input of decoder layer `layer`) or "post" (its output)

    def __post_init__(self):
        if self.point not in ("pre", "post"):
            raise ValueError(f"point must be 'pre' or 'post', got {self.point!r}")
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_{self.point}"

    @classmethod
    def parse(cls, hook_name: str) -> "HookPoint":
        m = _HOOK_RE.match(hook_name or "")
        if not m:
            raise ValueError(f"unsupported hook {hook_name!r}: only residual-stream hooks "
                             "blocks.L.hook_resid_pre / blocks.L.hook_resid_post are supported")
        return cls(int(m.group(1)), m.group(2))


def _replace_output(output, hidden):
    if isinstance(output, tuple):
        return (hidden,) + tuple(output[1:])
    return hidden


def _hidden_of_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def register(layers, hp: HookPoint, fn: Callable[[torch.Tensor], Optional[torch.Tensor]]):
    """Call fn(hidden [B, T, d]) at hook point hp on every forward; a returned tensor replaces the residual.

    Returns the torch hook handle (call .remove())."""
    if hp.layer >= len(layers):
        raise ValueError(f"hook {hp.hook_name}: the model has only {len(layers)} decoder layers")
    module = layers[hp.layer]
    if hp.point == "post":
        def post_hook(mod, args, output):
            new = fn(_hidden_of_output(output))
            return None if new is None else _replace_output(output, new)
        return module.register_forward_hook(post_hook)

    def pre_hook(mod, args, kwargs):
        if args:
            new = fn(args[0])
            return None if new is None else ((new,) + tuple(args[1:]), kwargs)
        new = fn(kwargs["hidden_states"])
        if new is None:
            return None
        kwargs = dict(kwargs, hidden_states=new)
        return args, kwargs
    return module.register_forward_pre_hook(pre_hook, with_kwargs=True)


@contextmanager
def hooked(layers, fns: dict):
    """Context manager: register {HookPoint: fn} for the duration of the block."""
    handles = []
    try:
        for hp, fn in fns.items():
            handles.append(register(layers, hp, fn))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture(layers, points):
    """Record the residual at each hook point on every forward: yields {HookPoint: [tensor, ...]} (detached)."""
    store = {hp: [] for hp in points}

    def recorder(hp):
        def rec(h):
            store[hp].append(h.detach())
        return rec

    with hooked(layers, {hp: recorder(hp) for hp in points}):
        yield store
