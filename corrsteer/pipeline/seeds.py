"""`corrsteer run --seeds 0,1,2,3,4`: split -> select -> test once per seed, then mean +- std per row in the
paper's Table 1 format (<out>/table.md; each seed's full run under <out>/seed<S>/): balanced accuracy (accuracy for
free-form tasks), with the unsteered model, the constant answer and the prompting rows beside the variants."""
from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from corrsteer.config import parse_seeds
from corrsteer.files import atomic_write_text
from corrsteer.pipeline.run import RunResult, corrsteer_run
from corrsteer.report.contrasts import CONSTANT, point

BASELINE = "baseline"


def accuracies(res: RunResult) -> dict:
    """{row: test balanced accuracy (accuracy for free-form tasks)} of one corrsteer_run result: the unsteered
    model, the constant answer (tasks with classes), every variant, control and prompting row."""
    ev = res.report.evaluation
    out = {BASELINE: point(ev, "baseline")}
    if ev.classes:
        out[CONSTANT] = point(ev, CONSTANT)
    out.update({n: point(ev, n) for n in ev.scores})
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single seed)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table_md(task: str, per_seed: dict, note: str = "", metric: str = "balanced accuracy") -> str:
    """Rows = methods, one column for the task: 'mean ± std' of the metric in percent over the seeds."""
    seeds = sorted(per_seed)
    variants = list(dict.fromkeys(v for s in seeds for v in per_seed[s]))
    lines = [f"| Method | {task} |", "|:---|---:|"]
    for v in variants:
        vals = [per_seed[s][v] for s in seeds if v in per_seed[s]]
        m, sd = mean_std([100 * x for x in vals])
        lines.append(f"| {v} | {m:.1f} ± {sd:.1f} |")
    seeds_txt = ", ".join(map(str, seeds))
    lines += ["", f"Test {metric} (%), mean ± sample standard deviation over seeds {seeds_txt} "
              f"(split → select → test repeated per seed).{' ' + note if note else ''}"]
    return "\n".join(lines) + "\n"


def run_seeds(lm, bank, task, out_dir, cfg) -> dict:
    """Run every seed of cfg.seeds; write table.md and seeds.json in out_dir; return {seed: {row: metric}}."""
    out = Path(out_dir)
    per_seed = {}
    for s in parse_seeds(cfg.seeds):
        sub = dataclasses.replace(cfg, seed=s, seeds=None, out=str(out / f"seed{s}"))
        per_seed[s] = accuracies(corrsteer_run(lm, bank, task, out / f"seed{s}", sub, sae_source=cfg.saes))
    metric = "balanced accuracy" if task.has_classes else "accuracy"
    note = f"Ranking {cfg.ranking}; CorrSteer-P combines {cfg.p_combine}."
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.md", table_md(task.name, per_seed, note, metric))
    atomic_write_text(out / "seeds.json", json.dumps({str(k): v for k, v in per_seed.items()}, indent=1))
    return per_seed
