"""llama.cpp control vectors: a GGUF file of arch `controlvector` with one F32 tensor `direction.{N}` per layer.

What the file must hold and what llama.cpp does with it (read in ggml-org/llama.cpp):
- `common/common.cpp`, `common_control_vector_load_one`: every tensor is named `direction.N`; N = 0 is rejected
  ("invalid (zero) direction tensor layer index"), tensors must be 1-D F32 of one width; direction.N is stored at
  offset n_embd * (N - 1) of the flat buffer (times the strength given with --control-vector-scaled).
- `src/llama-adapter.cpp`, `llama_adapter_cvec::apply`: block il (1 <= il < n_layer) reads offset n_embd * (il - 1),
  so direction.N is block N's vector; `tensors[0]` is never present ("there's never a tensor for layer 0").
- `src/models/llama.cpp`: `cur = build_cvec(cur, il)` after the block's FFN residual add, i.e. on the output of
  block il, at every position of every batch (prompt and generated tokens alike).
So direction.N = the output of decoder layer N (0-based) = our `blocks.N.hook_resid_post` =
`blocks.{N+1}.hook_resid_pre`; the output of layer 0 and the embeddings cannot be steered.
The writer follows vgel/repeng `repeng/extract.py` `ControlVector.export_gguf` (GGUFWriter(path, "controlvector"),
string `controlvector.model_hint`, uint32 `controlvector.layer_count`, tensors `direction.{layer}`), whose layer
numbering (model.layers[layer]'s output) is the same; ZJU-REAL/EasySteer's direct algorithm
(`_load_from_gguf`) reads `direction.L` as decoder layer L too, layer 0 included.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from corrsteer.export.sites import check_positions, require_layer_outputs
from corrsteer.files import atomic_path
from corrsteer.model.steer import SteeringPlan

ARCH = "controlvector"
FORMAT = "gguf-control-vector"


def write_directions(path, directions: dict[int, np.ndarray], model_hint: str) -> Path:
    """A control-vector GGUF with `direction.{k}` for each k of `directions` (float32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        _write_gguf(tmp, directions, model_hint)
    return path


def _write_gguf(path, directions: dict[int, np.ndarray], model_hint: str) -> None:
    import gguf
    w = gguf.GGUFWriter(str(path), ARCH)
    w.add_string(f"{ARCH}.model_hint", model_hint)
    w.add_uint32(f"{ARCH}.layer_count", len(directions))
    for k, v in sorted(directions.items()):
        w.add_tensor(f"direction.{k}", np.ascontiguousarray(v, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read_directions(path) -> tuple[str, dict[int, np.ndarray]]:
    """(model_hint, {N: float32 vector of direction.N}) of a control-vector GGUF; a file that is not one raises
    ValueError with one line."""
    import gguf
    try:
        reader = gguf.GGUFReader(str(path))
    except (OSError, ValueError, AssertionError) as e:
        raise ValueError(f"{path} is not a GGUF file ({type(e).__name__})") from None
    arch = _text(reader, "general.architecture")
    if arch != ARCH:
        raise ValueError(f"{path} is a GGUF of architecture {arch!r}, not a control vector ({ARCH!r})")
    out = {}
    for t in reader.tensors:
        prefix, _, n = t.name.partition(".")
        if prefix != "direction" or not n.isdigit():
            raise ValueError(f"{path}: tensor {t.name!r} is not direction.N")
        out[int(n)] = np.array(t.data, dtype=np.float32).reshape(-1)
    return _text(reader, f"{ARCH}.model_hint") or "", dict(sorted(out.items()))


def _text(reader, key: str) -> str | None:
    f = reader.get_field(key)
    return None if f is None else bytes(f.parts[f.data[0]]).decode("utf-8", errors="replace")


def write(plan: SteeringPlan, out, allow_prompt_positions: bool = False) -> list[Path]:
    """The plan as a llama.cpp control vector (coefficients folded in: load it with --control-vector FILE, or
    --control-vector-scaled FILE 1.0)."""
    check_positions(plan, FORMAT, allow_prompt_positions)
    dirs = require_layer_outputs(plan, FORMAT, lowest=1)
    return [write_directions(out, dirs, plan.model)]

