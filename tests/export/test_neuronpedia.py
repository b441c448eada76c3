"""Neuronpedia: a plan's features on a hosted SAE release become {modelId, layer, index, strength}; others are
refused in one line."""
import json

import pytest
import torch
from export_plans import feature_plan, logits, random_plan

from corrsteer.cli import main as cli
from corrsteer.export.neuronpedia import write


def test_features_on_gemma_scope(tiny_lm, tmp_path):
    plan = feature_plan(tiny_lm, sae_source="release:gemma-scope-2b-pt-res-canonical")
    path, = write(plan, tmp_path / "np.json")
    body = json.loads(path.read_text())
    assert body["modelId"] == "gemma-2-2b" and body["steer_method"] == "SIMPLE_ADDITIVE"
    assert body["features"] == [
        dict(modelId="gemma-2-2b", layer="3-gemmascope-res-16k", index=5, strength=2.5),
        dict(modelId="gemma-2-2b", layer="3-gemmascope-res-16k", index=9, strength=-1.0),
        dict(modelId="gemma-2-2b", layer="1-gemmascope-res-16k", index=2, strength=4.0)]


@pytest.mark.parametrize("sae_source, hooks", [
    ("trained", None),                                                              # README's run: our SAEs
    ("release:llama_scope_lxr_8x", ["blocks.2.hook_resid_post"]),                   # an imported vector
    ("release:llama_scope_lxr_8x", ["blocks.2.hook_resid_pre", "blocks.0.hook_resid_post"])])  # --hook-site paper
def test_other_plans_become_custom_vectors_at_resid_pre(tiny_lm, tmp_path, sae_source, hooks):
    """hook_resid_post of layer L is hook_resid_pre of layer L+1 (the same tensor), checked on the model; the
    vector is the plan's, coefficients folded in."""
    plan = (feature_plan(tiny_lm, sae_source=sae_source) if hooks is None
            else random_plan(tiny_lm, hooks, sae_source=sae_source))
    path, = write(plan, tmp_path / "np.json")
    body = json.loads(path.read_text())
    assert body["endpoint"].endswith("/api/vector/new") and "features" not in body
    assert len(body["vectors"]) == len(plan.entries)
    for v, e in zip(body["vectors"], plan.entries):
        assert v["hookType"] == "hook_resid_pre" and v["modelId"] == plan.model
        assert v["vector"] == plan.vectors[e.hook] and v["vectorDefaultSteerStrength"] == 1.0
        post = e.hook.endswith("post")
        assert v["layerNumber"] == e.layer + post
        if v["layerNumber"] == tiny_lm.n_layers:        # the last layer's output: no hook_resid_pre to compare
            continue
        pre = random_plan(tiny_lm, [f"blocks.{v['layerNumber']}.hook_resid_pre"])
        pre.vectors = {pre.entries[0].hook: v["vector"]}
        ids = torch.tensor([[1, 5, 7, 2]])
        same = random_plan(tiny_lm, [e.hook])
        same.vectors = {e.hook: v["vector"]}
        assert torch.allclose(logits(tiny_lm, ids, pre), logits(tiny_lm, ids, same), atol=1e-5)


def test_a_plan_that_steers_nothing_is_refused(tiny_lm, tmp_path, capsys):
    p = random_plan(tiny_lm, [], sae_source="trained").save(tmp_path / "plan.json")
    with pytest.raises(SystemExit) as e:
        cli.main(["export", str(p), "--format", "neuronpedia", "--out", str(tmp_path / "np.json")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "steers nothing" in err and err.startswith("corrsteer: error: --format neuronpedia"), err
