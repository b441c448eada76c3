"""`corrsteer run`: collect on the select split -> rank features -> validate each layer's feature (CorrSteer-P) ->
prefix search -> test all variants and the no-SAE baselines in one batched pass, then the prompting rows
(prompting.py: an instruction, few-shot from the select split, the instruction under P's plan) -> report (stages.py).

Outputs in out_dir: config.json (the settings, replayable with `corrsteer run --config`, and world_size), plan.json
(the last variant asked for, CorrSteer-P by default; plans/<variant>.json each), stats.safetensors (per-layer
CorrStats, also per class and against the shuffled outcomes), predictions.jsonl (one row per test sample and variant,
baseline, no-SAE baselines and controls included), validation.json, report.md and PNG plots; checkpoints/ (one
file per stage) lets a killed run resume. IN_PROGRESS marks the directory incomplete from the start of a run until
its last output is written. Under torchrun every rank computes its share and rank 0 alone writes.

Beside S / A / P (and N when asked for) the test stage runs the no-SAE baselines (raw-residual, mean-difference; each
chooses its own layer, and mean-difference its scale, on the validation split: baselines.py; plans/<name>.json, and
config.json's "baselines") and the controls (stages.control_plans): control-random-feature-1 ... -R (norm-matched
random features at P's layers) and control-shuffled-outcome (P's whole procedure on permuted scores).
"""
from __future__ import annotations

import json
from pathlib import Path

from corrsteer.config import EvalConfig, RunConfig
from corrsteer.files import refuse_input
from corrsteer.method.variants import variant_s
from corrsteer.pipeline.baselines import baseline_stage, record_in_config
from corrsteer.pipeline.load import check_context
from corrsteer.pipeline.prompting import PromptSet, prompt_set, prompt_stage, prompted
from corrsteer.pipeline.stages import (
    Context,
    Validation,
    accuracy,
    build_plans,
    collect_stage,
    control_plans,
    prefix_stage,
    rank_stage,
    run_plans,
    shuffled_candidates,
    test_stage,
    validate_stage,
    variant_picks,
)
from corrsteer.profile import step
from corrsteer.report.render import INPUTS, render, write_inputs
from corrsteer.report.stats import compare
from corrsteer.runtime.checkpoint import (
    atomic_save_tensors,
    atomic_write_text,
    mark_done,
    mark_in_progress,
    model_identity,
)
from corrsteer.runtime.dist import SINGLE, Dist
from corrsteer.sae.presets import feature_links, with_hook_site
from corrsteer.settings import CONFIG_NAME, write_config
from corrsteer.tasks.protocols import bind
from corrsteer.tasks.splits import split_record


def control_names(rows) -> list[str]:
    """The controls among a run's rows, compared with the baseline like the no-SAE baselines:
    control-random-feature (runs before several draws wrote one) or -1 ... -R in draw order, then
    control-shuffled-outcome."""
    draws = sorted((n for n in rows if n.startswith("control-random-feature-")), key=lambda n: int(n.rsplit("-", 1)[1]))
    return [n for n in ("control-random-feature", *draws, "control-shuffled-outcome") if n in rows]


# what a run writes (removed when a run starts, so an old report never sits beside new plans)
OUTPUTS = ("plan.json", "stats.safetensors", "predictions.jsonl", "validation.json", INPUTS, "report.md",
           "r_per_layer.png", "top_features.png")


def extra_settings(task, cfg: RunConfig, ranking: str, split_note: str) -> dict:
    """Report settings for the paper's options (only those that apply); ranking: --ranking as resolved for the task;
    split_note: how task.split drew the splits."""
    out = dict(ranking=ranking, hook_site=cfg.hook_site,
               P_combine=("all kept layers together (the paper)" if cfg.p_combine == "all"
                          else "the best-validated prefix of the kept layers (ours)"))
    if task.protocol:
        out.update(protocol=task.protocol, hub_id=task.hub_id, splits=split_note,
                   max_new_tokens=task.max_new_tokens, constrained_first_token=task.constrain)
    return out


def _start(out: Path, cfg, d: Dist, outputs=OUTPUTS, **context) -> None:
    """Mark the directory in progress, clear the previous outputs, record the settings (rank 0)."""
    if not d.main:
        return
    old = [out / n for n in (*outputs, CONFIG_NAME)] + sorted((out / "plans").glob("*.json"))
    for path in old:
        refuse_input(path, "--out's output")     # a task file or plan kept inside --out under an output's name
    mark_in_progress(out, cfg.command)
    for name in outputs:
        (out / name).unlink(missing_ok=True)
    if "plan.json" in outputs and (out / "plans").exists():
        for p in (out / "plans").glob("*.json"):
            p.unlink()
    write_config(out, cfg, world_size=d.world, **context)


def stats_tensors(col) -> dict:
    """stats.safetensors: layer<L>.<sum> (SAE features), class<c>.layer<L>.<sum> (the class col.classes[c]) and
    shuffled.layer<L>.<sum> (against the shuffled-outcome control's permuted scores)."""
    out = {f"layer{L}.{k}": v for L, st in col.sae.items() for k, v in st.state_dict().items()}
    out.update({f"class{c}.layer{L}.{k}": v for L, sts in col.by_class.items() for c, st in enumerate(sts)
                for k, v in st.state_dict().items()})
    out.update({f"shuffled.layer{L}.{k}": v for L, st in col.shuffled.items() for k, v in st.state_dict().items()})
    out.update({f"shuffled.class{c}.layer{L}.{k}": v for L, sts in col.shuffled_by_class.items()
                for c, st in enumerate(sts) for k, v in st.state_dict().items()})
    return out


def write_predictions(path: Path, rows_by_variant: dict) -> None:
    lines = [json.dumps(dict(variant=name, **r)) + "\n" for name, rows in rows_by_variant.items() for r in rows]
    atomic_write_text(path, "".join(lines))


def _save_plans(out: Path, plans: dict, last: str) -> None:
    (out / "plans").mkdir(parents=True, exist_ok=True)
    for n, p in plans.items():
        atomic_write_text(out / "plans" / f"{n}.json", json.dumps(p.to_dict(), indent=1))
    atomic_write_text(out / "plan.json", json.dumps(plans[last].to_dict(), indent=1))


def corrsteer_run(lm, bank, task, out_dir, cfg: RunConfig, sae_source: str = "trained", dist: Dist = SINGLE) -> dict:
    out = Path(out_dir)
    step("setup")
    bank, task = with_hook_site(bank, cfg.hook_site), bind(task, lm)    # hook site; protocol, scorer models
    ctx = Context(lm, bank, task, cfg, out, sae_source, dist, model_identity(lm))
    splits = task.split(cfg.n_select, cfg.n_val, cfg.n_test, seed=cfg.seed)
    sel, val_items, test_items = splits
    prompts = prompt_set(task, sel, cfg.few_shot, cfg.seed, test_items)
    fits_context(lm, task, [*sel, *val_items, *test_items], test_items, prompts)
    _start(out, cfg, dist, model=lm.context(), saes=bank.context(sae_source), task=task.name, ranking=ctx.ranking,
           prompts=prompts.to_dict())

    step("collect")
    col = collect_stage(ctx, sel)
    if dist.main:
        atomic_save_tensors(out / "stats.safetensors", stats_tensors(col))
    cands = rank_stage(ctx, col)
    step("validate")
    shuffled = shuffled_candidates(ctx, col) if "P" in cfg.variants else None
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
        _save_plans(out, plans, cfg.variants[-1])
    if cfg.select_only:
        if dist.main:
            mark_done(out)
        return dict(plans=plans, candidates=cands)

    best = variant_s(cands)[0]
    chosen = baseline_stage(ctx, col, val_items)              # raw-residual, mean-difference: their own layers
    base_plans = chosen.plans(ctx, col)
    for p in base_plans.values():
        p.split = record
    if dist.main:
        _save_plans(out, {**plans, **base_plans}, cfg.variants[-1])
        record_in_config(out, chosen.record())
    controls = control_plans(ctx, col, plans, shuffled_prefix)
    test_plans = {"baseline": {}, **{f"CorrSteer-{n}": p.hook_vectors(lm.device) for n, p in plans.items()},
                  **{n: p.hook_vectors(lm.device) for n, p in base_plans.items()},
                  **{n: p.hook_vectors(lm.device) for n, p in controls.items()}}
    step("test")
    rows = test_stage(ctx, test_items, test_plans)
    step("prompting rows")
    rows |= prompt_stage(ctx, test_items, prompts, test_plans.get("CorrSteer-P"))
    settings = dict(model=lm.name, task=task.name, scorer=task.scorer, sae_source=sae_source,
                    layers=len(bank), n_select=len(sel), n_val=len(val_items), n_test=len(test_items), pool=cfg.pool,
                    coef=cfg.coef, scale=cfg.scale, world_size=dist.world,
                    select_accuracy=f"{accuracy(col.rows):.3f}", val_baseline=f"{val.baseline:.3f}",
                    P_layers=[p.layer for p in picks.get("P", [])], S=f"layer {best.layer} feature {best.feature}",
                    P_filter=cfg.p_filter, random_draws=cfg.random_draws,
                    selection_measure="balanced accuracy" if task.has_classes else "accuracy",
                    **{n.replace("-", "_"): _features(p) for n, p in controls.items()},
                    raw_residual=chosen.chosen["raw-residual"].describe(),
                    mean_difference_layer=chosen.chosen["mean-difference"].layer,
                    mean_difference_scale=chosen.chosen["mean-difference"].scale, baselines_chosen=chosen.how,
                    **extra_settings(task, cfg, ctx.ranking, splits.note))
    step("report")
    res = _report(ctx, rows, cands, settings, val, (prefix, shuffled_prefix), feature_links(sae_source, picks),
                  prompts) \
        if dist.main else {}
    return dict(res, settings=settings)


def _features(plan) -> str:
    """'layer L feature F, ...' of a plan (the controls' settings line)."""
    return ", ".join(f"layer {e.layer} feature {f}" for e in plan.entries for f in e.features) or "none"


def _report(ctx: Context, rows: dict, cands: dict, settings: dict, val: Validation, prefixes, extra=None,
            prompts: PromptSet | None = None) -> dict:
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


def fits_context(lm, task, items, test_items=(), prompts: PromptSet | None = None) -> None:
    """Every item's prompt, as the model will see it, plus the task's generation length fits the context; so do the
    test items under each prompting row's template (instruction, few-shot examples), named with the row."""
    chat = False if task.gen_kwargs.get("formatted") else None
    check_context(lm, [(f"item {it.id}", it.prompt) for it in items], task.max_new_tokens, chat)
    for variant, template in (prompts.texts() if prompts else {}).items():
        check_context(lm, [(f"item {it.id} with the {variant} prompt", prompted(task, it, template).prompt)
                           for it in test_items], task.max_new_tokens, chat)


def check_run_inputs(lm, task, cfg: RunConfig) -> None:
    """The context checks of corrsteer_run, made right after the model loads (before any SAE is loaded or trained)."""
    task = bind(task, lm)
    sel, val_items, test_items = task.split(cfg.n_select, cfg.n_val, cfg.n_test, seed=cfg.seed)
    fits_context(lm, task, [*sel, *val_items, *test_items], test_items,
                 prompt_set(task, sel, cfg.few_shot, cfg.seed, test_items))


def eval_plan(lm, task, plan, out_dir, cfg: EvalConfig, dist: Dist = SINGLE) -> dict:
    """`corrsteer eval`: a saved plan against the unsteered model on the test split (disjoint from select/val)."""
    out = Path(out_dir)
    task = bind(task, lm)              # the protocol's generation args, scorer models
    _, _, test = task.split(cfg.n_select, cfg.n_val, cfg.n_test, seed=cfg.seed)
    fits_context(lm, task, test)
    _start(out, cfg, dist, ("predictions.jsonl",), model=lm.context(),
           plan=dict(name=plan.name, sae_source=plan.sae_source), task=task.name)
    rows = run_plans(lm, task, test, {"baseline": {}, plan.name: plan.hook_vectors(lm.device)}, cfg.batch_size, "eval",
                     plan.all_positions, dist=dist, checkpoint=out / "checkpoints" / "eval.safetensors",
                     model_id=model_identity(lm))
    if dist.main:
        write_predictions(out / "predictions.jsonl", rows)
        mark_done(out)
    return dict(comparison=compare(plan.name, rows["baseline"], rows[plan.name]))
