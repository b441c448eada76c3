"""Neuronpedia's steering: the plan's SAE features as {modelId, layer, index, strength} for neuronpedia.org/steer.

What its API takes (hijohnnylin/neuronpedia-docs, `docs/steering.md`): POST https://www.neuronpedia.org/api/steer
with {"prompt", "modelId", "features": [{"modelId", "layer": "<L>-<source set>", "index", "strength"}],
"temperature", "n_tokens", "freq_penalty", "seed", "strength_multiplier"} (its inference client calls the layer
"source": hijohnnylin/neuronpedia, `NPSteerFeature.md`). Only SAE releases that Neuronpedia hosts can be named:
corrsteer.sae.presets.NEURONPEDIA maps them to their pages `<modelId>/<L>-<source set>/<index>`. A feature's strength
is its coefficient (steering adds strength * W_dec[index] at the SAE's hook); Neuronpedia steers the SAE's own hook,
so a plan steered elsewhere (--hook-site paper) is refused, and it chooses the positions itself.
"""
from __future__ import annotations

import json
from pathlib import Path

from corrsteer.model.hooks import HookPoint
from corrsteer.model.steer import SteeringPlan
from corrsteer.sae.presets import NEURONPEDIA
from corrsteer.settings import SettingsError

FORMAT = "neuronpedia"


def _model_and_source(sae_source: str, layer: int) -> tuple[str, str]:
    release = sae_source.removeprefix("release:")
    template = NEURONPEDIA.get(release)      # https://www.neuronpedia.org/<modelId>/<L>-<source set>/<index>
    if template is None:
        raise SettingsError(f"--format {FORMAT}: the plan's SAEs ({sae_source}) are not on Neuronpedia, expected a "
                            f"plan made with --saes {' or '.join('release:' + r for r in NEURONPEDIA)}")
    model_id, source = template.split("/")[3:5]
    return model_id, source.format(L=layer)


def neuronpedia_features(plan: SteeringPlan) -> dict:
    """The body of a steer request without prompt and sampling settings."""
    feats, model_id = [], None
    for e in plan.entries:
        hp = HookPoint.parse(e.hook)
        if hp != HookPoint(e.layer, "post"):
            raise SettingsError(f"--format {FORMAT}: plan {plan.name!r} steers layer {e.layer}'s SAE at {e.hook}, "
                                f"expected blocks.{e.layer}.hook_resid_post (Neuronpedia steers the SAE's own hook)")
        model_id, source = _model_and_source(plan.sae_source, e.layer)
        feats += [dict(modelId=model_id, layer=source, index=int(f), strength=float(c))
                  for f, c in zip(e.features, e.coefficients)]
    if not feats:
        raise SettingsError(f"--format {FORMAT}: plan {plan.name!r} has no SAE features (an imported vector?), "
                            "expected a plan written by corrsteer run or select")
    return dict(modelId=model_id, features=feats, strength_multiplier=1.0, steer_method="SIMPLE_ADDITIVE")


def write(plan: SteeringPlan, out, allow_prompt_positions: bool = False) -> list[Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(neuronpedia_features(plan), indent=1) + "\n")
    return [out]
