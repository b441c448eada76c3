"""Vectors from elsewhere as a SteeringPlan that `corrsteer eval` / `generate` can test (`corrsteer import`).

Sources, each mapped to our hooks by the numbering its runtime uses (see gguf.py, lm_eval.py):
- gguf-control-vector: a llama.cpp / repeng / EasySteer control vector; direction.N is added to the output of
  decoder layer N -> `blocks.N.hook_resid_post`.
- steering-vectors: a .pt holding a steering-vectors `SteeringVector` as plain data: {"layer_activations":
  {layer: Tensor}, "layer_type": "decoder_block"} (`dataclasses.asdict(sv)`) or just {layer: Tensor}
  (`sv.layer_activations`); steering-vectors/steering-vectors `steering_vectors/steering_vector.py`
  (`SteeringVector.patch_activations`, `_create_additive_hook`) adds multiplier * layer_activations[L] through a
  forward hook on the module `layer_matching.py` guesses for "decoder_block" (`model.layers.{num}` for a
  Hugging Face llama), at every position from min_token_index (default 0) -> `blocks.L.hook_resid_post`. A pickled
  SteeringVector object is refused (loading it would run arbitrary code: torch.load(weights_only=True) only).
- lm-eval: an lm-evaluation-harness steered .pt; "add" entries at hookpoint `layers.N` -> `blocks.N.hook_resid_post`
  with steering_coefficient folded in.
- vllm: an EasySteer SteeringSpec .json with one direct vector (what `corrsteer export --format vllm` writes): its
  .gguf's direction.L at the spec's layers, times its scale, at the positions its `apply` selects (vllm.py).
These runtimes steer every position, so the plan steers every position (all_positions) unless asked otherwise; a
SteeringSpec's own positions are kept. The plan has no SAE features (entries with empty feature lists); its vectors
are the imported ones times `scale`. A control vector's model hint that is only a model type (repeng and EasySteer
write "llama") names no model: --model is then required. Where the model's config is here, the vectors' width and
layers are checked against it before the plan is written; the plan itself passes the checks every command makes
(corrsteer.model.plan_check).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from corrsteer.export import vllm
from corrsteer.export.gguf import read_directions
from corrsteer.model.hooks import HookPoint
from corrsteer.model.lm import model_shape
from corrsteer.model.plan_check import PlanProblem, check_plan_dict
from corrsteer.model.steer import PlanEntry, SteeringPlan
from corrsteer.settings import SettingsError, one_line

SOURCES = ("gguf-control-vector", "steering-vectors", "lm-eval", "vllm")
MODELS = "default, gemma3-270m, a .gguf file, a HF model directory or a hub id"


def plan_from_layers(vectors: dict[int, np.ndarray], name: str, model: str, source: str,
                     all_positions: bool = True, scale: float = 1.0) -> SteeringPlan:
    """A plan adding vectors[L] * scale to the output of decoder layer L."""
    if not vectors:
        raise SettingsError(f"{source}: no steering vectors found, expected at least one layer's vector")
    entries, vecs = [], {}
    for L, v in sorted(vectors.items()):
        hook = HookPoint(int(L), "post").hook_name
        v = np.asarray(v, dtype=np.float64).reshape(-1) * scale
        if not np.isfinite(v).all():
            raise SettingsError(f"{source}: the vector of layer {L} is not finite, expected finite numbers")
        entries.append(PlanEntry(int(L), hook, [], []))
        vecs[hook] = v.astype(np.float32).tolist()
    return SteeringPlan(name, model, f"imported:{source}", entries, vecs, all_positions=all_positions)


def _torch_file(path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such file, expected a .pt of steering vectors") from None
    except Exception as e:     # torch raises many kinds here: unpickling errors, zip errors, ...
        raise SettingsError(f"{path} is not a plain-data .pt ({one_line(e, 120)}), expected tensors in dicts "
                            "(save dataclasses.asdict(vector) rather than the object)") from None


def _as_array(path, key, v) -> np.ndarray:
    if not isinstance(v, torch.Tensor) or v.dim() != 1:
        raise SettingsError(f"{path}: the entry {key!r} is not a 1-D tensor, expected one vector per layer")
    return v.detach().double().numpy()


def read_steering_vectors(path) -> dict[int, np.ndarray]:
    d = _torch_file(path)
    if isinstance(d, dict) and "layer_activations" in d:
        if d.get("layer_type", "decoder_block") != "decoder_block":
            raise SettingsError(f"{path}: layer_type {d['layer_type']!r}, expected decoder_block (the output of "
                                "each decoder layer)")
        d = d["layer_activations"]
    if not isinstance(d, dict) or not all(isinstance(k, int) for k in d):
        raise SettingsError(f"{path}: not steering-vectors data, expected {{layer: tensor}} or "
                            "{'layer_activations': {layer: tensor}}")
    return {k: _as_array(path, k, v) for k, v in d.items()}


def read_lm_eval(path) -> dict[int, np.ndarray]:
    d = _torch_file(path)
    if not isinstance(d, dict):
        raise SettingsError(f"{path}: not an lm-eval steer file, expected {{hookpoint: {{steering_vector, ...}}}}")
    out = {}
    for hookpoint, info in d.items():
        prefix, _, n = str(hookpoint).partition(".")
        if prefix != "layers" or not n.isdigit() or not isinstance(info, dict):
            raise SettingsError(f"{path}: hookpoint {hookpoint!r} is not a decoder layer's output, expected layers.N")
        if info.get("action", "add") != "add" or info.get("head_index") is not None or info.get("bias") is not None:
            raise SettingsError(f"{path}: hookpoint {hookpoint} is a {info.get('action')!r} with head or bias, "
                                "expected plain additions (action add)")
        out[int(n)] = _as_array(path, hookpoint, info["steering_vector"]) * float(
            info.get("steering_coefficient", 1.0))
    return out


def read_control_vector(path) -> tuple[str, dict[int, np.ndarray]]:
    if not Path(path).exists():
        raise SettingsError(f"{path}: no such file, expected a control-vector .gguf")
    try:
        return read_directions(path)
    except ValueError as e:
        raise SettingsError(f"{one_line(e)}, expected a llama.cpp control vector") from None


def guess_source(path) -> str:
    """The source `--source auto` reads `path` as: by suffix (.gguf, .json), and a .pt by its keys (lm-eval's
    hookpoints `layers.N`, else steering-vectors data)."""
    suffix = Path(path).suffix
    if suffix in (".gguf", ".json"):
        return {".gguf": "gguf-control-vector", ".json": "vllm"}[suffix]
    d = _torch_file(path)
    if isinstance(d, dict) and d and all(isinstance(k, str) and k.startswith("layers.") for k in d):
        return "lm-eval"
    return "steering-vectors"


def model_of_hint(hint: str) -> str | None:
    """The model a file's hint names (our exports write the plan's model: an alias, a path, or a hub id with "--"
    for "/"), or None for an empty hint or one that is only a model type ("llama": a transformers model type)."""
    if not hint or hint in CONFIG_MAPPING_NAMES:
        return None
    return hint.replace("--", "/") if "--" in hint and not Path(hint).exists() else hint


def check_fits_model(vectors: dict[int, np.ndarray], model: str, path) -> None:
    """Every layer and width of `vectors` is the model's, where its config can be read without the network."""
    shape = model_shape(model)
    if shape is None:
        return
    n_layers, width = shape
    for L, v in sorted(vectors.items()):
        if L >= n_layers:
            raise SettingsError(f"{path} steers layer {L}, expected a layer of {model} (0..{n_layers - 1})")
        if v.size != width:
            raise SettingsError(f"{path}: the vector of layer {L} is {v.size} wide, expected {model}'s width {width}")


def read_vectors(path, source: str) -> tuple[str, dict[int, np.ndarray], bool | None]:
    """(model hint, {layer: vector}, the file's own positions or None) of `path` read as `source`."""
    if source == "gguf-control-vector":
        return (*read_control_vector(path), None)
    if source == "vllm":
        return vllm.read_spec(path)
    return "", read_lm_eval(path) if source == "lm-eval" else read_steering_vectors(path), None


def import_plan(path, source: str = "auto", model: str | None = None, name: str | None = None,
                all_positions: bool = True, scale: float = 1.0) -> SteeringPlan:
    """The plan that adds the vectors in `path` (read as `source`) for `model` (default: the model the file's hint
    names); a SteeringSpec's positions replace `all_positions`."""
    source = guess_source(path) if source == "auto" else source
    if source not in SOURCES:
        raise SettingsError(f"--source {source}: unknown vector source, expected one of auto, {', '.join(SOURCES)}")
    hint, vectors, positions = read_vectors(path, source)
    model = model or model_of_hint(hint)
    if not model:
        said = f"names only the model type {hint!r}" if hint else "does not name the model its vectors are for"
        raise SettingsError(f"--model is required: {path} {said}, expected --model {MODELS}")
    check_fits_model(vectors, model, path)
    plan = plan_from_layers(vectors, name or Path(path).stem, model, source,
                            all_positions if positions is None else positions, scale)
    try:
        check_plan_dict(plan.to_dict())
    except PlanProblem as e:
        raise SettingsError(f"{path}: {e}") from None
    return plan
