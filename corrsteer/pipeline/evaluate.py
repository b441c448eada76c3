"""Evaluation on the test split: every plan of a run and the unsteered baseline in shared batches (test_stage), and
`corrsteer eval`, a saved plan against the unsteered model (eval_plan). predictions.jsonl: one row per test sample
and plan."""
from __future__ import annotations

import json
from pathlib import Path

from corrsteer.config import EvalConfig
from corrsteer.pipeline.load import fits_context
from corrsteer.pipeline.runner import Context, run_plans
from corrsteer.report.stats import Comparison, compare
from corrsteer.runtime.checkpoint import atomic_write_text, mark_done, model_identity
from corrsteer.runtime.dist import SINGLE, Dist
from corrsteer.runtime.outdir import start_outputs
from corrsteer.tasks.protocols import bind

EVAL_OUTPUTS = ("predictions.jsonl",)


def test_stage(ctx: Context, test_items, test_plans: dict) -> dict:
    """{variant: rows} of every plan (the unsteered baseline under "baseline") on the test split."""
    return ctx.generate(test_items, test_plans, "test")


def write_predictions(path: Path, rows_by_variant: dict) -> None:
    lines = [json.dumps(dict(variant=name, **r)) + "\n" for name, rows in rows_by_variant.items() for r in rows]
    atomic_write_text(path, "".join(lines))


def eval_plan(lm, task, plan, out_dir, cfg: EvalConfig, dist: Dist = SINGLE) -> Comparison:
    """`corrsteer eval`: a saved plan against the unsteered model on the test split (disjoint from select/val)."""
    out = Path(out_dir)
    task = bind(task, lm)              # the protocol's generation args, scorer models
    _, _, test = task.split(cfg.n_select, cfg.n_val, cfg.n_test, seed=cfg.seed)
    fits_context(lm, task, test)
    start_outputs(out, cfg, dist, EVAL_OUTPUTS, model=lm.context(),
                  plan=dict(name=plan.name, sae_source=plan.sae_source), task=task.name)
    rows = run_plans(lm, task, test, {"baseline": {}, plan.name: plan.hook_vectors(lm.device)}, cfg.batch_size, "eval",
                     plan.all_positions, dist=dist, checkpoint=out / "checkpoints" / "eval.safetensors",
                     model_id=model_identity(lm))
    if dist.main:
        write_predictions(out / "predictions.jsonl", rows)
        mark_done(out)
    return compare(plan.name, rows["baseline"], rows[plan.name])
