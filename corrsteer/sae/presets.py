"""The paper's models and SAE releases as presets, the paper code's SAE placement, and Neuronpedia links.

    cfg = apply_preset(cfg)                 # --preset gemma-2-2b | llama-3.1-8b
    bank = with_hook_site(bank, "paper")   # the SAE of layer L read and steered at the input of layer L
    neuronpedia_url("release:gemma-scope-2b-pt-res-canonical", 12, 345)
"""
from __future__ import annotations

import dataclasses

from corrsteer.model.hooks import HookPoint
from corrsteer.sae.bank import BankEntry, SAEBank

PRESETS = {
    "gemma-2-2b": dict(model="google/gemma-2-2b-it", saes="release:gemma-scope-2b-pt-res-canonical", layers="0-25"),
    "llama-3.1-8b": dict(model="meta-llama/Llama-3.1-8B", saes="release:llama_scope_lxr_8x", layers="0-31"),
}
# sae-lens release -> Neuronpedia page of feature {id} at layer {L}
NEURONPEDIA = {
    "gemma-scope-2b-pt-res-canonical": "https://www.neuronpedia.org/gemma-2-2b/{L}-gemmascope-res-16k/{id}",
    "llama_scope_lxr_8x": "https://www.neuronpedia.org/llama3.1-8b/{L}-llamascope-res-32k/{id}",
}
_DEFAULTS = dict(model="default", saes="trained", layers=None)


def apply_preset(cfg):
    """cfg (run's settings) with the preset's model, SAEs and layers wherever those options are still at their
    defaults."""
    if not cfg.preset:
        return cfg
    now = dict(model=cfg.model, saes=cfg.saes, layers=cfg.layers)
    values = {k: v for k, v in PRESETS[cfg.preset].items() if now[k] == _DEFAULTS[k]}
    return dataclasses.replace(cfg, **values)


def with_hook_site(bank: SAEBank, site: str) -> SAEBank:
    """site "sae": unchanged; "paper": every SAE of layer L moved to blocks.L.hook_resid_pre (the input of layer
    L), where the paper's code applies an SAE trained on the output of layer L."""
    if site == "sae":
        return bank
    if site != "paper":
        raise ValueError(f"hook site must be sae or paper, got {site!r}")
    entries = {L: BankEntry(e.sae, HookPoint(L, "pre"), e.source) for L, e in bank}
    return SAEBank(entries, bank.model_name)


def neuronpedia_url(sae_source: str, layer: int, feature: int) -> str | None:
    """The feature's Neuronpedia page when its release has one there, else None."""
    release = sae_source.removeprefix("release:")
    template = NEURONPEDIA.get(release)
    return template.format(L=layer, id=feature) if template else None


def feature_links(sae_source: str, picks: dict) -> list[str]:
    """Report lines: one link per selected feature (picks: {variant: [objects with .layer and .feature]}), [] if
    none."""
    seen = {}
    for feats in picks.values():
        for p in feats:
            url = neuronpedia_url(sae_source, p.layer, int(p.feature))
            if url:
                seen[(p.layer, int(p.feature))] = url
    if not seen:
        return []
    lines = ["## Selected features on Neuronpedia", ""]
    lines += [f"- layer {L} feature {f}: <{u}>" for (L, f), u in sorted(seen.items())]
    return lines + [""]
