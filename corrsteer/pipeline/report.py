"""The report stage of `corrsteer run`: plans/<variant>.json and plan.json, the run's settings record, then
predictions.jsonl, validation.json and report_inputs.json, from which report.md and the plots are rendered
(corrsteer.report.render: what `corrsteer report DIR` does from the files alone)."""
from __future__ import annotations

import json
from pathlib import Path

from corrsteer.pipeline.evaluate import write_predictions
from corrsteer.pipeline.prefix import PrefixSearch
from corrsteer.pipeline.prompting import PromptSet
from corrsteer.pipeline.runner import Context
from corrsteer.pipeline.validate import Validation
from corrsteer.report.render import INPUTS, Rendered, render, write_inputs
from corrsteer.runtime.checkpoint import atomic_write_text, mark_done

# what a run writes (removed when a run starts, so an old report never sits beside new plans)
OUTPUTS = ("plan.json", "stats.safetensors", "predictions.jsonl", "validation.json", INPUTS, "report.md",
           "r_per_layer.png", "top_features.png")


def control_names(rows) -> list[str]:
    """The controls among a run's rows, compared with the baseline like the no-SAE baselines:
    control-random-feature (runs before several draws wrote one) or -1 ... -R in draw order, then
    control-shuffled-outcome."""
    draws = sorted((n for n in rows if n.startswith("control-random-feature-")), key=lambda n: int(n.rsplit("-", 1)[1]))
    return [n for n in ("control-random-feature", *draws, "control-shuffled-outcome") if n in rows]


def save_plans(out: Path, plans: dict, last: str) -> None:
    """plans/<name>.json of every plan, and plan.json: the plan named `last`."""
    (out / "plans").mkdir(parents=True, exist_ok=True)
    for n, p in plans.items():
        atomic_write_text(out / "plans" / f"{n}.json", json.dumps(p.to_dict(), indent=1))
    atomic_write_text(out / "plan.json", json.dumps(plans[last].to_dict(), indent=1))


def features_line(plan) -> str:
    """'layer L feature F, ...' of a plan (the controls' settings line)."""
    return ", ".join(f"layer {e.layer} feature {f}" for e in plan.entries for f in e.features) or "none"


def paper_settings(ctx: Context, split_note: str) -> dict:
    """Report settings for the paper's options (only those that apply); split_note: how task.split drew the splits."""
    task, cfg = ctx.task, ctx.cfg
    out = dict(ranking=ctx.ranking, hook_site=cfg.hook_site,
               P_combine=("all kept layers together (the paper)" if cfg.p_combine == "all"
                          else "the best-validated prefix of the kept layers (ours)"))
    if task.protocol:
        out.update(protocol=task.protocol, hub_id=task.hub_id, splits=split_note,
                   max_new_tokens=task.max_new_tokens, constrained_first_token=task.constrain)
    return out


def report_stage(ctx: Context, rows: dict, cands: dict, settings: dict, val: Validation,
                 prefixes: tuple[PrefixSearch | None, PrefixSearch | None], extra=None,
                 prompts: PromptSet | None = None) -> Rendered:
    """Write predictions.jsonl, validation.json and report_inputs.json, then render report.md and the plots from
    the files alone (corrsteer.report.render: what `corrsteer report DIR` does)."""
    out = ctx.out
    prefix, shuffled_prefix = prefixes
    write_predictions(out / "predictions.jsonl", rows)
    atomic_write_text(out / "validation.json", json.dumps(dict(
        val.to_dict(), p_prefix_accuracy=prefix.accuracy if prefix else [],
        shuffled_layers=[p.layer for p in shuffled_prefix.picks] if shuffled_prefix else [],
        shuffled_prefix_accuracy=shuffled_prefix.accuracy if shuffled_prefix else []), indent=1))
    write_inputs(out, title=f"CorrSteer on {ctx.task.name} ({ctx.lm.name})", settings=settings,
                 classes=ctx.task.has_classes, ranking=ctx.ranking, top_features=cands,
                 prompts=prompts.texts() if prompts else None, extra=extra)
    res = render(out)
    mark_done(out)
    return res
