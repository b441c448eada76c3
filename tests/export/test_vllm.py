"""EasySteer/vLLM: the export is a v2 SteeringSpec whose every key, default and value kind is the upstream one,
its vector file holds direction.L for decoder layer L (layer 0 included), and it imports back with its positions.

The upstream facts below were read in ZJU-REAL/EasySteer-vllm-v1 at 6267ca0cfc9c6e93b1427d36b1d655821d6d6f9b
(the vllm-steer submodule of ZJU-REAL/EasySteer 312c6d87166221ef54e372cf0c31d545d6b2a176),
`vllm/steer_vectors/api.py`: pydantic models with extra="forbid"; REQUIRED marks a field without a default."""
import json
import sys

import numpy as np
import pytest
from export_plans import random_plan

from corrsteer.export.gguf import read_directions
from corrsteer.export.importers import import_plan
from corrsteer.export.vllm import easysteer_spec, steering_spec, write
from corrsteer.settings import SettingsError

REQUIRED = object()
STEERING_SPEC = {"vectors": REQUIRED, "conflict": "priority"}
VECTOR_SPEC = {"source": None, "data": None, "algorithm": "direct", "scale": 1.0, "layers": None,
               "normalize": False, "apply": REQUIRED, "params": {}, "name": None}
APPLY_SPEC = dict.fromkeys([                      # SelectSpec's fields, every one defaulting to None
    "prompt", "generation", "prompt_tokens", "prompt_positions", "prompt_window", "generation_tokens",
    "generation_positions", "generation_window", "exclude_prompt_tokens", "exclude_prompt_positions",
    "exclude_prompt_window", "exclude_generation_tokens", "exclude_generation_positions",
    "exclude_generation_window"])
V1_KEYS = {"steer_vector_name", "steer_vector_int_id", "steer_vector_local_path", "target_layers",
           "prefill_trigger_positions", "prefill_trigger_tokens", "generate_trigger_tokens"}


def upstream_problems(spec: dict) -> list[str]:
    """What EasySteer's models would refuse in `spec` (the checks of api.py that apply to a direct .gguf vector)."""
    out = []

    def fields(obj, model, where):
        out.extend(f"{where}: unknown key {k}" for k in set(obj) - set(model))
        out.extend(f"{where}: missing {k}" for k, d in model.items() if d is REQUIRED and k not in obj)

    fields(spec, STEERING_SPEC, "SteeringSpec")
    if not spec.get("vectors"):
        out.append("vectors must be non-empty")
    for v in spec.get("vectors", []):
        fields(v, VECTOR_SPEC, "VectorSpec")
        src, layers = v.get("source"), v.get("layers")
        if not isinstance(src, str) or "|" in src or not src.lower().endswith(".gguf"):
            out.append(f"direct needs a plain .gguf source, got {src!r}")
        if layers is not None and (not layers or not all(type(x) is int for x in layers)):
            out.append(f"layers must be None or a non-empty list of ints, got {layers!r}")
        if not isinstance(v.get("scale", 1.0), float) or not isinstance(v.get("normalize", False), bool):
            out.append("scale is a float and normalize a bool")
        apply = v.get("apply", {})
        fields(apply, APPLY_SPEC, "ApplySpec")
        for phase in ("prompt", "generation"):
            if apply.get(phase) not in (None, "all"):
                out.append(f"{phase} must be 'all' or None")
        lists = [k for k in APPLY_SPEC if k.endswith(("_tokens", "_positions")) and apply.get(k) is not None]
        out.extend(f"{k} must be a non-empty list of ints" for k in lists
                   if not apply[k] or not all(type(x) is int for x in apply[k]))
        if not any(apply.get(k) is not None for k in APPLY_SPEC if not k.startswith("exclude_")):
            out.append("the clause selects nothing")
    return out


@pytest.mark.parametrize("all_positions, apply", [(False, {"prompt_positions": [-1], "generation": "all"}),
                                                  (True, {"prompt": "all", "generation": "all"})])
def test_spec_is_easysteers_v2_form_and_vectors_are_direction_L(tiny_lm, tmp_path, all_positions, apply):
    plan = random_plan(tiny_lm, ["blocks.0.hook_resid_post", "blocks.3.hook_resid_pre", "blocks.2.hook_resid_post"],
                       all_positions=all_positions)
    spec_path, vec_path = write(plan, tmp_path / "steer.json")
    assert vec_path.name == "steer.vectors.gguf"
    spec = json.loads(spec_path.read_text())
    assert upstream_problems(spec) == []
    assert spec == steering_spec(plan, vec_path.resolve())
    v, = spec["vectors"]
    assert v["apply"] == apply and v["layers"] == [0, 2] and v["source"] == str(vec_path.resolve())
    assert (v["algorithm"], v["scale"], v["normalize"]) == ("direct", 1.0, False)
    assert not V1_KEYS & (set(spec) | set(v))
    hint, dirs = read_directions(vec_path)
    assert hint == tiny_lm.name and sorted(dirs) == [0, 2]
    np.testing.assert_array_equal(dirs[0], np.float32(plan.vectors["blocks.0.hook_resid_post"]))
    both = np.float64(plan.vectors["blocks.3.hook_resid_pre"]) + np.float64(plan.vectors["blocks.2.hook_resid_post"])
    np.testing.assert_allclose(dirs[2], both, rtol=1e-6, atol=1e-7)   # the same point, summed


@pytest.mark.parametrize("change", [
    lambda s: s.update(steer_vector_name="x"),                                      # a v1 key
    lambda s: s["vectors"][0].update(target_layers=[1]),                            # v1's name for layers
    lambda s: s["vectors"][0]["apply"].update(phases=["prompt"]),                   # removed from ApplySpec
    lambda s: s["vectors"][0].update(apply={}),                                     # selects nothing
    lambda s: s["vectors"][0].update(source="x.gguf|direct"),                       # the removed "path|algo"
    lambda s: s["vectors"][0]["apply"].update(generation="every"),
])
def test_the_upstream_check_refuses_what_easysteer_refuses(tiny_lm, tmp_path, change):
    spec = steering_spec(random_plan(tiny_lm, ["blocks.1.hook_resid_post"]), tmp_path / "v.gguf")
    change(spec)
    assert upstream_problems(spec)


def test_with_easysteer_installed_the_file_is_a_steering_spec(tiny_lm, tmp_path):
    api = pytest.importorskip("vllm.steer_vectors")
    spec_path, _ = write(random_plan(tiny_lm, ["blocks.1.hook_resid_post"], all_positions=False),
                         tmp_path / "s.json")
    spec = api.SteeringSpec.model_validate_json(spec_path.read_text())
    assert spec.vectors[0].apply.prompt_positions == [-1] and spec.vectors[0].apply.generation == "all"


@pytest.mark.parametrize("all_positions", [False, True])
def test_an_export_imports_back_with_its_positions(tiny_lm, tmp_path, all_positions):
    plan = random_plan(tiny_lm, ["blocks.0.hook_resid_post", "blocks.3.hook_resid_post"], all_positions=all_positions)
    spec_path, _ = write(plan, tmp_path / "steer.json")
    back = import_plan(spec_path, model="m", all_positions=not all_positions)      # the file's positions win
    assert back.all_positions == all_positions and back.model == "m"
    assert back.vectors.keys() == plan.vectors.keys()
    for k, v in plan.vectors.items():
        np.testing.assert_array_equal(np.float32(back.vectors[k]), np.float32(v))


def test_import_keeps_the_specs_scale_and_layers_and_refuses_other_positions(tiny_lm, tmp_path):
    plan = random_plan(tiny_lm, ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"])
    spec_path, vec = write(plan, tmp_path / "steer.json")
    spec = json.loads(spec_path.read_text())
    spec["vectors"][0].update(scale=2.5, layers=[2], source=vec.name)      # a relative source: beside the spec
    spec_path.write_text(json.dumps(spec))
    back = import_plan(spec_path, model="m")
    assert list(back.vectors) == ["blocks.2.hook_resid_post"]
    np.testing.assert_allclose(back.vectors["blocks.2.hook_resid_post"],
                               2.5 * np.float64(plan.vectors["blocks.2.hook_resid_post"]), rtol=1e-6)
    spec["vectors"][0]["apply"] = {"prompt_window": [-4, None], "generation": "all"}
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(SettingsError, match="selects positions a plan cannot hold"):
        import_plan(spec_path, model="m")


def test_without_easysteer_the_helper_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)          # not importable, whatever this machine has
    with pytest.raises(ImportError, match="^easysteer_spec needs EasySteer's vLLM fork"):
        easysteer_spec(tmp_path / "steer.json")
