"""EasySteer (steering on vLLM): the SteerVectorRequest its engine takes, as a JSON file next to a vector file.

What it takes (ZJU-REAL/EasySteer, README "Vector Configuration Examples" and `vllm-steer`'s direct algorithm,
`DirectAlgorithm._load_from_gguf`): SteerVectorRequest(steer_vector_name, steer_vector_int_id,
steer_vector_local_path=FILE.gguf, scale, target_layers, prefill_trigger_positions | prefill_trigger_tokens,
generate_trigger_tokens, algorithm="direct", normalize=False); the GGUF holds `direction.L` per decoder layer L
(read as layer L's payload, h' = h + vector on the decoder layer's output, layer 0 included);
prefill_trigger_positions=[-1] steers the last prompt token, prefill_trigger_tokens=[-1] every prompt token and
generate_trigger_tokens=[-1] every generated token. Our plan's positions map exactly: the last prompt token + every
generated token by default, every position with --all-positions. vLLM itself has no steering API (vllm #3451).

    spec = vllm_spec(plan, "plan.gguf")          # the Python dict
    SteerVectorRequest(**spec)                   # in EasySteer
"""
from __future__ import annotations

import json
from pathlib import Path

from corrsteer.export.gguf import write_directions
from corrsteer.export.sites import require_layer_outputs
from corrsteer.files import atomic_write_text
from corrsteer.model.steer import SteeringPlan

FORMAT = "vllm"


def vllm_spec(plan: SteeringPlan, vector_path, scale: float = 1.0) -> dict:
    """SteerVectorRequest's keyword arguments for `plan` with its vectors in `vector_path`."""
    layers = list(require_layer_outputs(plan, FORMAT, lowest=0))
    prefill = {"prefill_trigger_tokens": [-1]} if plan.all_positions else {"prefill_trigger_positions": [-1]}
    return dict(steer_vector_name=plan.name, steer_vector_int_id=1, steer_vector_local_path=str(vector_path),
                scale=float(scale), target_layers=layers, **prefill, generate_trigger_tokens=[-1],
                algorithm="direct", normalize=False)


def write(plan: SteeringPlan, out, allow_prompt_positions: bool = False) -> list[Path]:
    """out (a .json spec) and out with suffix .vectors.gguf (the vectors, direction.L per decoder layer L), named
    apart from a gguf-control-vector export of the same name."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    vec = write_directions(out.with_suffix(".vectors.gguf"), require_layer_outputs(plan, FORMAT, lowest=0), plan.model)
    atomic_write_text(out, json.dumps(vllm_spec(plan, vec.resolve()), indent=1) + "\n")
    return [out, vec]
