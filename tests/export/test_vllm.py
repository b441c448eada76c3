"""EasySteer/vLLM: the SteerVectorRequest spec names the right layers and positions, and its vector file holds
direction.L for decoder layer L (layer 0 included)."""
import json

import numpy as np
import pytest
from export_plans import random_plan

from corrsteer.export.gguf import read_directions
from corrsteer.export.vllm import vllm_spec, write


@pytest.mark.parametrize("all_positions, prefill", [(False, {"prefill_trigger_positions": [-1]}),
                                                    (True, {"prefill_trigger_tokens": [-1]})])
def test_spec_and_vectors(tiny_lm, tmp_path, all_positions, prefill):
    plan = random_plan(tiny_lm, ["blocks.0.hook_resid_post", "blocks.3.hook_resid_pre", "blocks.2.hook_resid_post"],
                       all_positions=all_positions)
    spec_path, vec_path = write(plan, tmp_path / "steer.json")
    assert vec_path.name == "steer.vectors.gguf"
    spec = json.loads(spec_path.read_text())
    assert spec == vllm_spec(plan, vec_path.resolve())
    assert spec["target_layers"] == [0, 2] and spec["generate_trigger_tokens"] == [-1]
    assert {k: spec[k] for k in prefill} == prefill and not ({"prefill_trigger_tokens",
                                                               "prefill_trigger_positions"} - set(prefill)) & set(spec)
    assert spec["algorithm"] == "direct" and spec["scale"] == 1.0
    assert spec["steer_vector_local_path"] == str(vec_path.resolve())
    hint, dirs = read_directions(vec_path)
    assert hint == tiny_lm.name and sorted(dirs) == [0, 2]
    np.testing.assert_array_equal(dirs[0], np.float32(plan.vectors["blocks.0.hook_resid_post"]))
    both = np.float64(plan.vectors["blocks.3.hook_resid_pre"]) + np.float64(plan.vectors["blocks.2.hook_resid_post"])
    np.testing.assert_allclose(dirs[2], both, rtol=1e-6, atol=1e-7)   # the same point, summed
