"""Neuronpedia: a plan's features on a hosted SAE release become {modelId, layer, index, strength} under the plan's
model; other plans become custom vectors at our own hook; a plan of the generated tokens only needs
--allow-prompt-positions."""
import json

import pytest
from export_plans import feature_plan, random_plan

from corrsteer.cli import main as cli
from corrsteer.export.neuronpedia import write


@pytest.mark.parametrize("model, model_id", [("google--gemma-2-2b-it", "gemma-2-2b-it"),   # the preset's model
                                             ("google/gemma-2-2b", "gemma-2-2b"),
                                             ("meta-llama--Llama-3.1-8B", "llama3.1-8b")])
def test_features_keep_the_saes_model_and_the_body_names_the_plans(tiny_lm, tmp_path, model, model_id):
    """As Neuronpedia's own gemma-2-2b-it presets (hijohnnylin/neuronpedia ebb8426f, api/steer/presets/route.tsx):
    modelId the model that runs, features under the model their SAE release was trained on."""
    plan = feature_plan(tiny_lm, sae_source="release:gemma-scope-2b-pt-res-canonical")
    plan.model = model
    path, = write(plan, tmp_path / "np.json")
    body = json.loads(path.read_text())
    assert body["modelId"] == model_id and body["steer_method"] == "SIMPLE_ADDITIVE"
    assert body["features"] == [
        dict(modelId="gemma-2-2b", layer="3-gemmascope-res-16k", index=5, strength=2.5),
        dict(modelId="gemma-2-2b", layer="3-gemmascope-res-16k", index=9, strength=-1.0),
        dict(modelId="gemma-2-2b", layer="1-gemmascope-res-16k", index=2, strength=4.0)]


@pytest.mark.parametrize("sae_source, hooks", [
    ("trained", None),                                                              # README's run: our SAEs
    ("release:llama_scope_lxr_8x", ["blocks.2.hook_resid_post"]),                   # an imported vector
    ("release:llama_scope_lxr_8x", ["blocks.2.hook_resid_pre", "blocks.0.hook_resid_post"]),  # --hook-site paper
    ("trained", ["blocks.3.hook_resid_post"])])                                     # the last layer's output
def test_other_plans_become_custom_vectors_at_our_own_hook(tiny_lm, tmp_path, sae_source, hooks):
    """/api/vector/new (hijohnnylin/neuronpedia ebb8426f, api/vector/new/route.tsx) takes hook_resid_pre and
    hook_resid_post, needs layerNumber < the model's layers and stores the vector at blocks.<layerNumber>.<hookType>:
    that is our hook's name, for the last layer too; the vector is the plan's, coefficients folded in."""
    plan = (feature_plan(tiny_lm, sae_source=sae_source) if hooks is None
            else random_plan(tiny_lm, hooks, sae_source=sae_source))
    path, = write(plan, tmp_path / "np.json")
    body = json.loads(path.read_text())
    assert body["endpoint"].endswith("/api/vector/new") and "features" not in body
    assert len(body["vectors"]) == len(plan.entries)
    for v, e in zip(body["vectors"], plan.entries):
        assert set(v) == {"modelId", "layerNumber", "hookType", "vector", "vectorDefaultSteerStrength", "vectorLabel"}
        assert v["hookType"] in ("hook_resid_pre", "hook_resid_post") and v["modelId"] == "tiny-llama"
        assert f"blocks.{v['layerNumber']}.{v['hookType']}" == e.hook and 0 <= v["layerNumber"] < tiny_lm.n_layers
        assert v["vector"] == plan.vectors[e.hook] and v["vectorDefaultSteerStrength"] == 1.0


@pytest.mark.parametrize("sae_source", ["release:gemma-scope-2b-pt-res-canonical", "trained"])
def test_a_plan_of_generated_tokens_only_needs_allow_prompt_positions(tiny_lm, tmp_path, capsys, sae_source):
    """Neuronpedia steers every position: the same rule as llama.cpp and lm-eval."""
    p = feature_plan(tiny_lm, all_positions=False, sae_source=sae_source).save(tmp_path / "plan.json")
    argv = ["export", str(p), "--format", "neuronpedia", "--out", str(tmp_path / "np.json")]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("corrsteer: error: --format neuronpedia steers every prompt position"), err
    assert cli.main(argv + ["--allow-prompt-positions"]) == 0


def test_a_plan_that_steers_nothing_is_refused(tiny_lm, tmp_path, capsys):
    p = random_plan(tiny_lm, [], sae_source="trained").save(tmp_path / "plan.json")
    with pytest.raises(SystemExit) as e:
        cli.main(["export", str(p), "--format", "neuronpedia", "--out", str(tmp_path / "np.json")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "steers nothing" in err and err.startswith("corrsteer: error: --format neuronpedia"), err
