"""Neuronpedia: a plan's features on a hosted SAE release become {modelId, layer, index, strength}; others are
refused in one line."""
import json

import pytest
from export_plans import feature_plan, random_plan

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


@pytest.mark.parametrize("plan, words", [
    (lambda lm: feature_plan(lm, sae_source="trained"), "not on Neuronpedia"),
    (lambda lm: random_plan(lm, ["blocks.2.hook_resid_post"], sae_source="release:llama_scope_lxr_8x"),
     "no SAE features"),
    (lambda lm: random_plan(lm, ["blocks.2.hook_resid_pre"], sae_source="release:llama_scope_lxr_8x"),
     "expected blocks.2.hook_resid_post")])
def test_plans_neuronpedia_cannot_show_are_refused(tiny_lm, tmp_path, capsys, plan, words):
    p = plan(tiny_lm).save(tmp_path / "plan.json")
    with pytest.raises(SystemExit) as e:
        cli.main(["export", str(p), "--format", "neuronpedia", "--out", str(tmp_path / "np.json")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert words in err and err.startswith("corrsteer: error: --format neuronpedia"), err
