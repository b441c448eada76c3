"""lm-evaluation-harness's `steered` model: `lm_eval --model steered --model_args pretrained=M,steer_path=FILE.pt`.

What it reads (EleutherAI/lm-evaluation-harness, `lm_eval/models/hf_steered.py`, `SteeredModel.__init__`, PR #2749):
a .pt file loaded with torch.load, {hookpoint: {"steering_vector": Tensor, "steering_coefficient": float,
"action": "add" | "clamp", "bias": Tensor | None, "head_index": int | None}}; action "add" adds
steering_vector * steering_coefficient to every position (`SteeredModel.add`: acts + vector) through a forward hook
on the module named `hookpoint` in `model.base_model.named_modules()` (`steer`), i.e. on that module's output. For a
Hugging Face decoder the base model is e.g. LlamaModel, whose decoder layers are `layers.{k}`: hookpoint `layers.k`
is the output of decoder layer k = our `blocks.k.hook_resid_post`. Our vectors already hold the coefficients, so
steering_coefficient is 1.0. Its .csv form derives each vector from one SAE feature per hookpoint (a later row for
the same hookpoint replaces the earlier one), so it cannot hold a plan's summed features: only .pt is written.
"""
from __future__ import annotations

from pathlib import Path

import torch

from corrsteer.export.sites import check_positions, require_layer_outputs
from corrsteer.files import atomic_torch_save
from corrsteer.model.steer import SteeringPlan
from corrsteer.settings import SettingsError

FORMAT = "lm-eval"


def hookpoint(k: int) -> str:
    """The module of `model.base_model` whose output is the output of decoder layer k."""
    return f"layers.{k}"


def steer_config(plan: SteeringPlan) -> dict:
    """The dict hf_steered.py loads: one "add" entry per decoder layer the plan steers."""
    outs = require_layer_outputs(plan, FORMAT, lowest=0)
    return {hookpoint(k): dict(steering_vector=torch.from_numpy(v.copy()), steering_coefficient=1.0, action="add",
                               bias=None, head_index=None) for k, v in outs.items()}


def write(plan: SteeringPlan, out, allow_prompt_positions: bool = False) -> list[Path]:
    check_positions(plan, FORMAT, allow_prompt_positions)
    out = Path(out)
    if out.suffix not in (".pt", ".pth"):
        raise SettingsError(f"--out {out}: lm-eval's steered model reads .pt or .pth files, expected FILE.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(out, steer_config(plan))
    return [out]

