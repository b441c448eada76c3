"""Neuronpedia's steering: the plan's SAE features as {modelId, layer, index, strength} for neuronpedia.org/steer.

What its API takes, read in hijohnnylin/neuronpedia at ebb8426fc550ad5d1f76d52c271a624af3c08a57 (2026-08-20;
`apps/webapp/app/api/steer/route.tsx` `steerSchema`): POST https://www.neuronpedia.org/api/steer (api/steer-chat
for chat) with {"prompt", "modelId", "features": [{"modelId", "layer": "<L>-<source set>", "index", "strength"}],
"temperature", "n_tokens", "seed", "strength_multiplier" (0..10), "steer_method" ("SIMPLE_ADDITIVE")}. The body's
modelId is the model that runs, each feature's modelId the model its SAE was trained on: Neuronpedia's own
gemma-2-2b-it presets (`api/steer/presets/route.tsx`) send modelId "gemma-2-2b-it" with features under "gemma-2-2b"
(it swaps in the base model's SAEs, `lib/utils/inference.ts`). So the body's modelId is the plan's model
(NEURONPEDIA_MODELS maps our model names to Neuronpedia's ids) and the features keep the SAE release's model
(corrsteer.sae.presets.NEURONPEDIA: pages `<modelId>/<L>-<source set>/<index>`). A feature's strength is its
coefficient (steering adds strength * W_dec[index] at the SAE's hook). Neuronpedia steers every position, prompt
included, so a plan that steers only the generated tokens is refused as for llama.cpp and lm-eval unless
--allow-prompt-positions accepts the difference.

A plan that is not that (our trained SAEs, a local --sae-dir, --hook-site paper, an imported vector) is written
as custom vectors: the bodies of `POST /api/vector/new` (`apps/webapp/app/api/vector/new/route.tsx`
`newVectorSchema`: {"modelId", "layerNumber", "hookType" in {hook_resid_pre, hook_resid_post}
(`lib/utils/neuron-vector.ts`), "vector" (the model's width), "vectorDefaultSteerStrength" (-300..300),
"vectorLabel"}, layerNumber < the model's layers, stored at hook `blocks.<layerNumber>.<hookType>`), one per steered
hook, coefficients folded in, strength 1: our `blocks.L.hook_resid_post` is sent as layerNumber L, hookType
hook_resid_post, the same name, so the last layer's output is layerNumber n_layers - 1. Uploading needs an API key
and a model Neuronpedia hosts.
"""
from __future__ import annotations

import json
from pathlib import Path

from corrsteer.export.sites import check_positions
from corrsteer.files import atomic_write_text
from corrsteer.model.hooks import HookPoint
from corrsteer.model.steer import SteeringPlan
from corrsteer.sae.presets import NEURONPEDIA
from corrsteer.settings import SettingsError

FORMAT = "neuronpedia"
# our model names (hub ids, or their "--" form in a plan) -> Neuronpedia model ids
NEURONPEDIA_MODELS = {"google/gemma-2-2b-it": "gemma-2-2b-it", "google/gemma-2-2b": "gemma-2-2b",
                      "meta-llama/Llama-3.1-8B": "llama3.1-8b", "meta-llama/Llama-3.1-8B-Instruct": "llama3.1-8b-it"}


def model_id(model: str) -> str:
    """Neuronpedia's id of our model name: the table's, else the name after the organisation, lowercased (its ids'
    style: gemma-2-2b-it, gpt2-small), to be replaced by Neuronpedia's id where they differ."""
    hub = model.replace("--", "/")
    return NEURONPEDIA_MODELS.get(hub, hub.rsplit("/", 1)[-1].lower())


def _template(sae_source: str) -> str | None:
    """https://www.neuronpedia.org/<modelId>/<L>-<source set>/<index> for a hosted release, else None."""
    return NEURONPEDIA.get(sae_source.removeprefix("release:"))


def _model_and_source(sae_source: str, layer: int) -> tuple[str, str]:
    sae_model, source = _template(sae_source).split("/")[3:5]
    return sae_model, source.format(L=layer)


def hosted_features(plan: SteeringPlan) -> bool:
    """Whether the plan is SAE features of a release Neuronpedia hosts, each steered at its SAE's own hook."""
    return bool(_template(plan.sae_source)) and bool(plan.entries) and all(
        e.features and e.hook == HookPoint(e.layer, "post").hook_name for e in plan.entries)


def neuronpedia_features(plan: SteeringPlan) -> dict:
    """The body of a steer request without prompt and sampling settings."""
    if not hosted_features(plan):
        raise SettingsError(f"--format {FORMAT}: plan {plan.name!r} is not features of a hosted SAE release at their "
                            f"own hooks, expected a plan made with --saes "
                            f"{' or '.join('release:' + r for r in NEURONPEDIA)} (others export as custom vectors)")
    feats = []
    for e in plan.entries:
        sae_model, source = _model_and_source(plan.sae_source, e.layer)
        feats += [dict(modelId=sae_model, layer=source, index=int(f), strength=float(c))
                  for f, c in zip(e.features, e.coefficients)]
    return dict(modelId=model_id(plan.model), features=feats, strength_multiplier=1.0, steer_method="SIMPLE_ADDITIVE")


def custom_vectors(plan: SteeringPlan) -> dict:
    """Neuronpedia's custom-vector upload bodies (POST /api/vector/new), one per steered hook."""
    vectors = []
    for e in plan.entries:
        if e.hook not in plan.vectors:
            raise SettingsError(f"--format {FORMAT}: plan {plan.name!r} has no vector for {e.hook}, expected a plan "
                                "written by corrsteer run or select")
        hp = HookPoint.parse(e.hook)
        vectors.append(dict(modelId=model_id(plan.model), layerNumber=hp.layer, hookType=f"hook_resid_{hp.point}",
                            vector=[float(x) for x in plan.vectors[e.hook]],
                            vectorDefaultSteerStrength=1.0, vectorLabel=f"corrsteer {plan.name} {e.hook}"))
    if not vectors:
        raise SettingsError(f"--format {FORMAT}: plan {plan.name!r} steers nothing, expected a plan written by "
                            "corrsteer run or select")
    return dict(endpoint="https://www.neuronpedia.org/api/vector/new", vectors=vectors)


def write(plan: SteeringPlan, out, allow_prompt_positions: bool = False) -> list[Path]:
    check_positions(plan, FORMAT, allow_prompt_positions)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = neuronpedia_features(plan) if hosted_features(plan) else custom_vectors(plan)
    atomic_write_text(out, json.dumps(body, indent=1) + "\n")
    return [out]
