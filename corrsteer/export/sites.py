"""Where a plan's vectors are added, in the numbering the other runtimes use: "the output of decoder layer k".

Our hooks (corrsteer.model.hooks): `blocks.L.hook_resid_post` is the output of decoder layer L (0-based) and
`blocks.L.hook_resid_pre` its input, the output of layer L-1; `blocks.0.hook_resid_pre` is the embeddings' output
(k = -1 here), which no runtime below can steer. A plan that steers both `blocks.L.hook_resid_post` and
`blocks.{L+1}.hook_resid_pre` adds both vectors at the same point, so they are summed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corrsteer.model.hooks import HookPoint
from corrsteer.model.steer import SteeringPlan
from corrsteer.settings import SettingsError

EMBEDDINGS = -1


@dataclass(frozen=True)
class Site:
    """A residual point as the output of decoder layer `k` (EMBEDDINGS for the input of layer 0)."""
    k: int

    @classmethod
    def of(cls, hook: str) -> "Site":
        hp = HookPoint.parse(hook)
        return cls(hp.layer if hp.point == "post" else hp.layer - 1)

    @property
    def hook(self) -> str:
        """Our name for the point (the post hook of layer k; the pre hook of layer 0 for the embeddings)."""
        return HookPoint(0, "pre").hook_name if self.k == EMBEDDINGS else HookPoint(self.k, "post").hook_name


def layer_outputs(plan: SteeringPlan) -> dict[int, np.ndarray]:
    """{k: float32 vector added to the output of decoder layer k}, summed per point, sorted by k."""
    if not plan.vectors:
        raise SettingsError(f"--plan: plan {plan.name!r} has no vectors, expected a plan.json written by corrsteer "
                            "run, select or import")
    out: dict[int, np.ndarray] = {}
    for hook, v in plan.vectors.items():
        k = Site.of(hook).k
        vec = np.asarray(v, dtype=np.float64)
        out[k] = out[k] + vec if k in out else vec
    return {k: out[k].astype(np.float32) for k in sorted(out)}


def check_positions(plan: SteeringPlan, fmt: str, allow_prompt_positions: bool) -> None:
    """Runtimes that add at every position cannot express a plan that steers the generated tokens only."""
    if plan.all_positions or allow_prompt_positions:
        return
    raise SettingsError(f"--format {fmt} steers every prompt position but plan {plan.name!r} steers only the last "
                        "prompt token and the generated ones, expected a plan made with --all-positions (or pass "
                        "--allow-prompt-positions to accept the difference)")


def require_layer_outputs(plan: SteeringPlan, fmt: str, lowest: int) -> dict[int, np.ndarray]:
    """layer_outputs(plan), refusing points below layer output `lowest` that the format cannot address."""
    outs = layer_outputs(plan)
    low = [k for k in outs if k < lowest]
    if low:
        raise SettingsError(f"--format {fmt} cannot steer {Site(low[0]).hook} of plan {plan.name!r} (the output of "
                            f"layer {low[0]}), expected points at the output of layer {lowest} or later")
    return outs
