"""Neuronpedia's steering: the plan's SAE features as {modelId, layer, index, strength} for neuronpedia.org/steer.

What its API takes (hijohnnylin/neuronpedia-docs, `docs/steering.md`): POST https://www.neuronpedia.org/api/steer
with {"prompt", "modelId", "features": [{"modelId", "layer": "<L>-<source set>", "index", "strength"}],
"temperature", "n_tokens", "freq_penalty", "seed", "strength_multiplier"} (its inference client calls the layer
"source": hijohnnylin/neuronpedia, `NPSteerFeature.md`). Only SAE releases that Neuronpedia hosts can be named:
corrsteer.sae.presets.NEURONPEDIA maps them to their pages `<modelId>/<L>-<source set>/<index>`. A feature's strength
is its coefficient (steering adds strength * W_dec[index] at the SAE's hook); Neuronpedia steers the SAE's own hook
and chooses the positions itself.

A plan that is not that (our trained SAEs, a local --sae-dir, --hook-site paper, an imported vector) is written
as custom vectors: the bodies of `POST /api/vector/new` (hijohnnylin/neuronpedia, the Python library's
`VectorRequest.new`: {"modelId", "layerNumber", "hookType", "vector", "vectorDefaultSteerStrength", "vectorLabel"}),
one per steered hook, coefficients folded in, strength 1. That endpoint takes only `hook_resid_pre`, so our
`blocks.L.hook_resid_post` (output of layer L) becomes layerNumber L+1 at `hook_resid_pre`, the same tensor (the last
layer's output becomes layerNumber = the number of layers, which has no such hook there). Uploading needs an API key
and a model Neuronpedia hosts; modelId is the plan's model name, to be replaced by Neuronpedia's id where they differ.
"""
from __future__ import annotations

import json
from pathlib import Path

from corrsteer.files import atomic_write_text
from corrsteer.model.hooks import HookPoint
from corrsteer.model.steer import SteeringPlan
from corrsteer.sae.presets import NEURONPEDIA
from corrsteer.settings import SettingsError

FORMAT = "neuronpedia"


def _template(sae_source: str) -> str | None:
    """https://www.neuronpedia.org/<modelId>/<L>-<source set>/<index> for a hosted release, else None."""
    return NEURONPEDIA.get(sae_source.removeprefix("release:"))


def _model_and_source(sae_source: str, layer: int) -> tuple[str, str]:
    model_id, source = _template(sae_source).split("/")[3:5]
    return model_id, source.format(L=layer)


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
    feats, model_id = [], None
    for e in plan.entries:
        model_id, source = _model_and_source(plan.sae_source, e.layer)
        feats += [dict(modelId=model_id, layer=source, index=int(f), strength=float(c))
                  for f, c in zip(e.features, e.coefficients)]
    return dict(modelId=model_id, features=feats, strength_multiplier=1.0, steer_method="SIMPLE_ADDITIVE")


def custom_vectors(plan: SteeringPlan) -> dict:
    """Neuronpedia's custom-vector upload bodies (POST /api/vector/new), one per steered hook."""
    vectors = []
    for e in plan.entries:
        if e.hook not in plan.vectors:
            raise SettingsError(f"--format {FORMAT}: plan {plan.name!r} has no vector for {e.hook}, expected a plan "
                                "written by corrsteer run or select")
        hp = HookPoint.parse(e.hook)
        vectors.append(dict(modelId=plan.model, layerNumber=hp.layer + (hp.point == "post"),
                            hookType="hook_resid_pre", vector=[float(x) for x in plan.vectors[e.hook]],
                            vectorDefaultSteerStrength=1.0, vectorLabel=f"corrsteer {plan.name} {e.hook}"))
    if not vectors:
        raise SettingsError(f"--format {FORMAT}: plan {plan.name!r} steers nothing, expected a plan written by "
                            "corrsteer run or select")
    return dict(endpoint="https://www.neuronpedia.org/api/vector/new", vectors=vectors)


def write(plan: SteeringPlan, out, allow_prompt_positions: bool = False) -> list[Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = neuronpedia_features(plan) if hosted_features(plan) else custom_vectors(plan)
    atomic_write_text(out, json.dumps(body, indent=1) + "\n")
    return [out]
