"""What `corrsteer run` adds for the paper's setups, kept out of run.py: the task bound to the model (protocol,
constrained decoding), the SAE placement, and the report's extra settings and sections."""
from __future__ import annotations

from corrsteer.sae.presets import feature_links, with_hook_site
from corrsteer.tasks.protocols import bind


def prepare(lm, bank, task, cfg):
    """(bank, task) for this run: SAEs at cfg.hook_site, the task bound to lm (its protocol's generation args)."""
    return with_hook_site(bank, getattr(cfg, "hook_site", "sae")), bind(task, lm)


def extra_settings(task, cfg, split_note: str) -> dict:
    """Report settings for the paper's options (only those that apply); split_note: how task.split drew the splits."""
    out = dict(ranking=getattr(cfg, "ranking", "pearson"), hook_site=getattr(cfg, "hook_site", "sae"),
               P_combine=("all kept layers together (the paper)" if getattr(cfg, "p_combine", "prefix") == "all"
                          else "the best-validated prefix of the kept layers (ours)"))
    if task.protocol:
        out.update(protocol=task.protocol, hub_id=task.hub_id, splits=split_note,
                   max_new_tokens=task.max_new_tokens, constrained_first_token=task.constrain)
    return out


def report_sections(sae_source: str, picks: dict) -> list[str]:
    return feature_links(sae_source, picks)
