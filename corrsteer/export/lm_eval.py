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

Versions: the steered model arrived in lm-eval 0.4.8; 0.4.8 to 0.4.9.1 build each "add" hook as
`lambda acts: acts + steering_coefficient * steering_vector` in a loop (read in their wheels' hf_steered.py), so every
hookpoint adds the last entry's vector; 0.4.9.2 binds each with functools.partial (`SteeredModel.add`). MIN_VERSION
is therefore 0.4.9.2 for a plan of several layers; where lm_eval is installed here, an older one refuses such a plan.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch
from packaging.version import InvalidVersion, Version

from corrsteer.export.sites import check_positions, require_layer_outputs
from corrsteer.files import atomic_torch_save
from corrsteer.model.steer import SteeringPlan
from corrsteer.settings import SettingsError

FORMAT = "lm-eval"
MIN_VERSION = "0.4.9.2"      # the first lm-eval whose steered model adds each hookpoint's own vector
FIRST_STEERED = "0.4.8"      # the first lm-eval with a steered model


def installed_version() -> str | None:
    """The lm-eval installed in this environment, or None."""
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return None


def version_problem(version: str | None, n_layers: int) -> str | None:
    """Why lm-eval `version` (None: not installed here, not checked) cannot run a plan of `n_layers` layers."""
    try:
        v = Version(version) if version else None
    except InvalidVersion:
        return None
    if v is None or v >= Version(MIN_VERSION):
        return None
    if v < Version(FIRST_STEERED):
        return f"lm-eval {version} installed here has no steered model"
    if n_layers > 1:
        return (f"lm-eval {version} installed here adds the last layer's vector at every hookpoint (fixed in "
                f"{MIN_VERSION}) and the plan steers {n_layers} layers")
    return None


def hookpoint(k: int) -> str:
    """The module of `model.base_model` whose output is the output of decoder layer k."""
    return f"layers.{k}"


def steer_config(plan: SteeringPlan) -> dict:
    """The dict hf_steered.py loads: one "add" entry per decoder layer the plan steers."""
    outs = require_layer_outputs(plan, FORMAT, lowest=0)
    return {hookpoint(k): dict(steering_vector=torch.from_numpy(v.copy()), steering_coefficient=1.0, action="add",
                               bias=None, head_index=None) for k, v in outs.items()}


def write(plan: SteeringPlan, out, allow_prompt_positions: bool = False) -> list[Path]:
    """The plan as lm-eval's steer file; run it with lm-eval >= MIN_VERSION."""
    check_positions(plan, FORMAT, allow_prompt_positions)
    out = Path(out)
    if out.suffix not in (".pt", ".pth"):
        raise SettingsError(f"--out {out}: lm-eval's steered model reads .pt or .pth files, expected FILE.pt")
    config = steer_config(plan)
    problem = version_problem(installed_version(), len(config))
    if problem:
        raise SettingsError(f"--format {FORMAT}: {problem}, expected lm-eval >= {MIN_VERSION} (pip install -U "
                            f"'lm-eval>={MIN_VERSION}')")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(out, config)
    return [out]

