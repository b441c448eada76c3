"""EasySteer (steering on vLLM): a plan as EasySteer's v2 `SteeringSpec`, a JSON file next to a vector file.

What EasySteer takes now, read in its source (ZJU-REAL/EasySteer at 312c6d87166221ef54e372cf0c31d545d6b2a176,
2026-08-06; its vLLM fork ZJU-REAL/EasySteer-vllm-v1 at 6267ca0cfc9c6e93b1427d36b1d655821d6d6f9b, the `vllm-steer`
submodule of that commit, `vllm/steer_vectors/api.py`; pinned by tests/export/test_vllm.py):
- `SteeringSpec(vectors=[VectorSpec, ...], conflict="priority")`, pydantic with extra="forbid" (an unknown key is
  an error), given per request as `llm.generate(prompts, steering=spec)` / HTTP `"steering": {...}`, or as the
  engine default with `--steering-config spec.json` (`SteeringSpec.model_validate_json` of the file's text).
- `VectorSpec(source=FILE.gguf, algorithm="direct", scale=1.0, layers=None, normalize=False, apply=ApplySpec,
  params={}, name=None)`; the direct algorithm reads `direction.L` of the GGUF as decoder layer L's vector
  (`algorithms/loading.py` `read_gguf_directions`) and adds it to that layer's output (`DecoderSteerController`, a
  forward hook on the decoder layer), layer 0 included: direction.L = our `blocks.L.hook_resid_post`.
- `ApplySpec` (a `SelectSpec`): `prompt="all"` / `generation="all"` select a whole phase, `prompt_positions=[-1]`
  the last prompt token. Our plan's positions map exactly: `ApplySpec(prompt_positions=[-1], generation="all")`
  (the last prompt token and every generated one, our default), `ApplySpec(prompt="all", generation="all")` for a
  plan made with --all-positions.
The v1 `SteerVectorRequest` (prefill_trigger_positions, generate_trigger_tokens, ...) was deleted upstream on
2026-08-03 and is not written. vLLM itself has no steering API (vllm #3451).

    from vllm import LLM
    from vllm.steer_vectors import SteeringSpec
    spec = SteeringSpec.model_validate_json(open("steer.json").read())     # or easysteer_spec("steer.json")
    LLM(model=M, enable_steer_vector=True, ...).generate(prompts, steering=spec)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from corrsteer.export.gguf import read_directions, write_directions
from corrsteer.export.sites import require_layer_outputs
from corrsteer.files import atomic_write_text
from corrsteer.model.steer import SteeringPlan
from corrsteer.settings import SettingsError, one_line

FORMAT = "vllm"
LAST_PROMPT_TOKEN = {"prompt_positions": [-1], "generation": "all"}     # our default positions
EVERY_POSITION = {"prompt": "all", "generation": "all"}                # --all-positions


def steering_spec(plan: SteeringPlan, vector_path) -> dict:
    """The SteeringSpec (as its JSON dict) that adds `plan` with its vectors read from `vector_path`."""
    layers = list(require_layer_outputs(plan, FORMAT, lowest=0))
    apply = EVERY_POSITION if plan.all_positions else LAST_PROMPT_TOKEN
    return dict(vectors=[dict(source=str(vector_path), algorithm="direct", scale=1.0, layers=layers,
                              normalize=False, apply=dict(apply), name=plan.name)])


def easysteer_spec(path):
    """The file written by `corrsteer export --format vllm` as EasySteer's SteeringSpec object (needs its vLLM
    fork installed: `from vllm.steer_vectors import SteeringSpec`)."""
    try:
        from vllm.steer_vectors import SteeringSpec
    except ImportError:
        raise ImportError("easysteer_spec needs EasySteer's vLLM fork (vllm.steer_vectors.SteeringSpec), which is not "
                          f"installed here; {path} is plain JSON: json.load gives the same fields") from None
    return SteeringSpec.model_validate_json(Path(path).read_text())


def write(plan: SteeringPlan, out, allow_prompt_positions: bool = False) -> list[Path]:
    """out (the .json spec) and out with suffix .vectors.gguf (the vectors, direction.L per decoder layer L), named
    apart from a gguf-control-vector export of the same name."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    vec = write_directions(out.with_suffix(".vectors.gguf"), require_layer_outputs(plan, FORMAT, lowest=0), plan.model)
    atomic_write_text(out, json.dumps(steering_spec(plan, vec.resolve()), indent=1) + "\n")
    return [out, vec]


# ---------------------------------------------------------------------------------------------------------------
# reading one back (corrsteer import)
# ---------------------------------------------------------------------------------------------------------------
def _int_list(x) -> bool:
    return x is None or isinstance(x, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in x)


def _one_vector(path, spec) -> dict:
    vectors = spec.get("vectors") if isinstance(spec, dict) else None
    if not isinstance(vectors, list) or len(vectors) != 1 or not isinstance(vectors[0], dict):
        raise SettingsError(f"{path}: not a one-vector SteeringSpec, expected {{\"vectors\": [one VectorSpec]}} as "
                            "corrsteer export --format vllm writes it")
    v = vectors[0]
    if v.get("algorithm", "direct") != "direct" or v.get("normalize", False) is not False or v.get("data") \
            or not isinstance(v.get("source"), str) or v.get("params") or not _int_list(v.get("layers", None)):
        raise SettingsError(f"{path}: a {v.get('algorithm', 'direct')!r} vector (normalize "
                            f"{v.get('normalize', False)}), expected a direct, unnormalized vector from a .gguf "
                            "source at a list of layers")
    return v


def _positions(path, apply) -> bool:
    """all_positions of the plan for an ApplySpec dict (nulls dropped)."""
    given = {k: v for k, v in (apply or {}).items() if v is not None} if isinstance(apply, dict) else apply
    if given == EVERY_POSITION:
        return True
    if given == LAST_PROMPT_TOKEN:
        return False
    raise SettingsError(f"{path}: apply {json.dumps(given)} selects positions a plan cannot hold, expected "
                        f"{json.dumps(EVERY_POSITION)} or {json.dumps(LAST_PROMPT_TOKEN)}")


def read_spec(path) -> tuple[str, dict[int, np.ndarray], bool]:
    """(model hint, {layer: vector * scale}, all_positions) of a one-vector direct SteeringSpec JSON file."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such file, expected a SteeringSpec .json") from None
    except (OSError, ValueError) as e:
        raise SettingsError(f"{path} is not JSON ({one_line(e, 120)}), expected a SteeringSpec .json") from None
    v = _one_vector(path, spec)
    all_positions = _positions(path, v.get("apply"))
    source = Path(v["source"]) if Path(v["source"]).is_absolute() else Path(path).parent / v["source"]
    try:
        hint, dirs = read_directions(source)
    except (ValueError, OSError) as e:
        raise SettingsError(f"{path}: its source {source} is not readable ({one_line(e, 120)}), expected a "
                            "control-vector .gguf") from None
    layers = v.get("layers") or sorted(dirs)
    missing = [L for L in layers if L not in dirs]
    if missing:
        raise SettingsError(f"{path}: layers {missing} have no direction in {source}, expected direction.L for each")
    scale = float(v.get("scale", 1.0))
    return hint, {L: dirs[L].astype(np.float64) * scale for L in layers}, all_positions
