"""`corrsteer run`, stage by stage (one module each):

    load (load.py) -> collect (collect.py) -> rank (method/rank.py) -> validate (validate.py) -> prefix search
    (prefix.py) -> plans (plans.py; baselines.py) -> evaluate (evaluate.py; prompting.py) -> report (report.py)

every generating stage through the one batch loop of runner.py (sharded, checkpointed, with progress).

Outputs in out_dir: config.json (the settings, replayable with `corrsteer run --config`, and world_size), plan.json
(the last variant asked for, CorrSteer-P by default; plans/<variant>.json each), stats.safetensors (per-layer
CorrStats, also per class and against the shuffled outcomes), predictions.jsonl (one row per test sample and variant,
baseline, no-SAE baselines and controls included), validation.json, report.md and PNG plots; checkpoints/ (one
file per stage) lets a killed run resume. IN_PROGRESS marks the directory incomplete from the start of a run until
its last output is written. Under torchrun every rank computes its share and rank 0 alone writes.

Beside S / A / P (and N when asked for) the test stage runs the no-SAE baselines (raw-residual, mean-difference; each
chooses its own layer, and mean-difference its scale, on the validation split: baselines.py; plans/<name>.json, and
config.json's "baselines") and the controls (plans.control_plans): control-random-feature-1 ... -R (norm-matched
random features at P's layers) and control-shuffled-outcome (P's whole procedure on permuted scores).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from corrsteer.config import RunConfig
from corrsteer.method.rank import Candidate, rank_layers, shuffled_candidates
from corrsteer.method.variants import variant_s
from corrsteer.model.steer import SteeringPlan
from corrsteer.pipeline.baselines import Baselines, baseline_stage, record_in_config
from corrsteer.pipeline.collect import Collected, collect_stage, stats_tensors
from corrsteer.pipeline.evaluate import test_stage
from corrsteer.pipeline.load import fits_context
from corrsteer.pipeline.plans import build_plans, control_plans, variant_picks
from corrsteer.pipeline.prefix import prefix_stage
from corrsteer.pipeline.prompting import prompt_set, prompt_stage
from corrsteer.pipeline.report import OUTPUTS, features_line, paper_settings, report_stage, save_plans
from corrsteer.pipeline.runner import Context
from corrsteer.pipeline.validate import Validation, validate_stage
from corrsteer.profile import step
from corrsteer.report.render import Rendered
from corrsteer.report.stats import balanced_accuracy
from corrsteer.runtime.checkpoint import atomic_save_tensors, mark_done, model_identity
from corrsteer.runtime.dist import SINGLE, Dist
from corrsteer.runtime.outdir import start_outputs
from corrsteer.sae.presets import feature_links, with_hook_site
from corrsteer.tasks.protocols import bind
from corrsteer.tasks.splits import split_record


@dataclass
class RunResult:
    """What a run returns: the variants' plans ({variant: SteeringPlan}), the ranked candidates ({layer: top
    features}), the settings table of the report and (after the test stage, on rank 0) the rendered report's
    numbers. `corrsteer select` stops after the plans: settings {} and report None."""
    plans: dict[str, SteeringPlan]
    candidates: dict[int, list[Candidate]]
    settings: dict = field(default_factory=dict)
    report: Rendered | None = None


def corrsteer_run(lm, bank, task, out_dir, cfg: RunConfig, sae_source: str = "trained",
                  dist: Dist = SINGLE) -> RunResult:
    out = Path(out_dir)
    step("setup")
    bank, task = with_hook_site(bank, cfg.hook_site), bind(task, lm)    # hook site; protocol, scorer models
    ctx = Context(lm, bank, task, cfg, out, sae_source, dist, model_identity(lm))
    splits = task.split(cfg.n_select, cfg.n_val, cfg.n_test, seed=cfg.seed)
    sel, val_items, test_items = splits
    prompts = prompt_set(task, sel, cfg.few_shot, cfg.seed, test_items)
    fits_context(lm, task, [*sel, *val_items, *test_items], test_items, prompts)
    start_outputs(out, cfg, dist, OUTPUTS, model=lm.context(), saes=bank.context(sae_source), task=task.name,
                  ranking=ctx.ranking, prompts=prompts.to_dict())

    step("collect")
    col = collect_stage(ctx, sel)
    if dist.main:
        atomic_save_tensors(out / "stats.safetensors", stats_tensors(col))
    cands = rank_layers(col, ctx.ranking, cfg.coef, cfg.scale)
    step("validate")
    shuffled = shuffled_candidates(col, ctx.ranking, cfg.coef, cfg.scale) if "P" in cfg.variants else None
    val = validate_stage(ctx, cands, val_items, shuffled)
    step("prefix search")
    prefix, shuffled_prefix = prefix_stage(ctx, cands, val_items, val, shuffled) if "P" in cfg.variants \
        else (None, None)
    picks = variant_picks(ctx, cands, prefix, col)
    plans = build_plans(ctx, picks)
    record = split_record(task.name, splits, (cfg.n_select, cfg.n_val, cfg.n_test), cfg.seed)
    for p in plans.values():
        p.split = record
    if dist.main:
        save_plans(out, plans, cfg.variants[-1])
    if cfg.select_only:
        if dist.main:
            mark_done(out)
        return RunResult(plans, cands)

    chosen = baseline_stage(ctx, col, val_items)              # raw-residual, mean-difference: their own layers
    base_plans = chosen.plans(ctx, col)
    for p in base_plans.values():
        p.split = record
    if dist.main:
        save_plans(out, {**plans, **base_plans}, cfg.variants[-1])
        record_in_config(out, chosen.record())
    controls = control_plans(ctx, col, plans, shuffled_prefix)
    test_plans = {"baseline": {}, **{f"CorrSteer-{n}": p.hook_vectors(lm.device) for n, p in plans.items()},
                  **{n: p.hook_vectors(lm.device) for n, p in base_plans.items()},
                  **{n: p.hook_vectors(lm.device) for n, p in controls.items()}}
    step("test")
    rows = test_stage(ctx, test_items, test_plans)
    step("prompting rows")
    rows |= prompt_stage(ctx, test_items, prompts, test_plans.get("CorrSteer-P"))
    settings = run_settings(ctx, splits, col, val, picks, cands, controls, chosen)
    step("report")
    res = report_stage(ctx, rows, cands, settings, val, (prefix, shuffled_prefix), feature_links(sae_source, picks),
                       prompts) if dist.main else None
    return RunResult(plans, cands, settings, res)


def run_settings(ctx: Context, splits, col: Collected, val: Validation, picks: dict, cands: dict, controls: dict,
                 chosen: Baselines) -> dict:
    """The report's settings table: what the run used and chose."""
    lm, task, cfg = ctx.lm, ctx.task, ctx.cfg
    sel, val_items, test_items = splits
    best = variant_s(cands)[0]
    return dict(model=lm.name, task=task.name, scorer=task.scorer, sae_source=ctx.sae_source,
                layers=len(ctx.bank), n_select=len(sel), n_val=len(val_items), n_test=len(test_items), pool=cfg.pool,
                coef=cfg.coef, scale=cfg.scale, world_size=ctx.dist.world,
                select_accuracy=f"{balanced_accuracy(col.rows, classes=False):.3f}",
                val_baseline=f"{val.baseline:.3f}",
                P_layers=[p.layer for p in picks.get("P", [])], S=f"layer {best.layer} feature {best.feature}",
                P_filter=cfg.p_filter, random_draws=cfg.random_draws,
                selection_measure="balanced accuracy" if task.has_classes else "accuracy",
                **{n.replace("-", "_"): features_line(p) for n, p in controls.items()},
                raw_residual=chosen.chosen["raw-residual"].describe(),
                mean_difference_layer=chosen.chosen["mean-difference"].layer,
                mean_difference_scale=chosen.chosen["mean-difference"].scale, baselines_chosen=chosen.how,
                **paper_settings(ctx, splits.note))
