"""corrsteer command line: train-sae | run | select | eval | generate.

Each command's options are generated from its settings dataclass in corrsteer.config (defaults, types, allowed
values and help live there only); run, select, eval and train-sae record their settings in <out>/config.json and
replay one with --config (options given on the command line override the file).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

from corrsteer.cli import checks
from corrsteer.config import (COMMANDS, EvalConfig, GenerateConfig, ModelOptions, RunConfig, SettingsError, TrainSAEConfig,
                     add_options, load_settings, model_context, write_config)


def quality_table(rows: list[dict]) -> str:
    """Held-out quality per layer: FVE on the built-in tasks' chat prompts + answers and on docstrings."""
    lines = ["| layer | hook | d_sae | k | FVE chat | FVE docs | L0 | dead | s |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['hook']} | {r['d_sae']} | {r['k']} | {r['fve']:.3f} | "
                     f"{r.get('fve_docs', float('nan')):.3f} | {r['l0']:.1f} | {100 * r['dead']:.1f}% | "
                     f"{r['seconds']:.1f} |")
    fves = [r["fve"] for r in rows]
    docs = [r.get("fve_docs", float("nan")) for r in rows]
    lines.append(f"\nFVE on chat task prompts: min {min(fves):.3f}, median {statistics.median(fves):.3f}; "
                 f"on docstrings: min {min(docs):.3f}, median {statistics.median(docs):.3f}; "
                 f"dead max {100 * max(r['dead'] for r in rows):.1f}%")
    return "\n".join(lines)


def _model(cfg: ModelOptions, default: str | None = None, device=None):
    from corrsteer.model.lm import load_model
    dev, dtype = cfg.device_dtype()
    return load_model(cfg.model or default, device=device or dev, dtype=dtype)


def _train(lm, cfg: TrainSAEConfig) -> list[dict]:
    """Train (or resume) the SAEs `cfg` asks for and record the whole bank: quality.json/.md and config.json in the
    SAE cache, whichever command started the training."""
    from corrsteer.paths import sae_cache_dir
    from corrsteer.sae.train import bank_quality, train_bank

    t0 = time.time()
    out = sae_cache_dir(lm.name, cfg.sae_dir)
    layers = cfg.layer_list or list(range(lm.n_layers))
    rows = train_bank(lm, out, layers=layers, point=cfg.hook, cfg=cfg, dataset=cfg.dataset, force=cfg.force)
    meta, rows = rows[-1], rows[:-1]
    total = time.time() - t0
    print(quality_table(rows) + "\n" + _summary(meta, total))
    _record(out, lm, cfg, meta, total, bank_quality(out, point=cfg.hook))
    return rows


def _summary(meta: dict, total: float) -> str:
    return (f"held-out: {meta.get('eval_tokens_chat', meta['eval_tokens'])} tokens of the built-in tasks' prompts "
            f"with the model's answers and {meta.get('eval_tokens_docs', meta['eval_tokens'])} tokens of docstrings, "
            f"none trained on (first position and the shared chat prefix excluded); answers and text "
            f"{meta.get('text_seconds', 0):.0f} s, activations {meta['collect_seconds']:.0f} s; total {total:.0f} s")


def _record(out, lm, cfg: TrainSAEConfig, meta: dict, total: float, rows: list[dict]) -> None:
    """quality.md/.json (every layer in the cache, as recorded when it was trained) and config.json."""
    if not rows:
        return
    text = f"# SAEs for {lm.name}\n\n{quality_table(rows)}\n\n{_summary(meta, total)}\n"
    (out / "quality.md").write_text(text)
    (out / "quality.json").write_text(json.dumps(dict(model=lm.name, rows=rows, **meta, total_seconds=total),
                                                 indent=2))
    write_config(out, cfg, model=model_context(lm))


def _missing(out, layers, hook: str = "post") -> list[int]:
    return [L for L in layers if not (out / f"blocks.{L}.hook_resid_{hook}" / "cfg.json").exists()]


def cmd_train_sae(cfg: TrainSAEConfig) -> int:
    from corrsteer.paths import sae_cache_dir
    from corrsteer.sae.train import bank_quality

    lm = _model(cfg)
    out = sae_cache_dir(lm.name, cfg.sae_dir)
    print(f"corrsteer: SAEs for {lm.name} ({lm.n_layers} layers, d_model {lm.d_model}) -> {out}", file=sys.stderr)
    layers = cfg.layer_list or list(range(lm.n_layers))
    if not cfg.force and not _missing(out, layers, cfg.hook):
        rows = bank_quality(out, layers, cfg.hook)
        if len(rows) == len(layers):      # trained and evaluated before: nothing to do
            print(quality_table(rows) + f"\n(cached in {out}; --force retrains)")
            return 0
    _train(lm, cfg)
    return 0


def _bank(lm, cfg: RunConfig):
    from corrsteer.paths import sae_cache_dir

    if cfg.saes == "trained":
        out = sae_cache_dir(lm.name, cfg.sae_dir)
        missing = _missing(out, cfg.layer_list or range(lm.n_layers))
        if missing:      # only what is missing: trained layers are loaded as they are, not re-evaluated
            from corrsteer.pipeline.dist import env_world
            if env_world() > 1:
                raise SettingsError(f"--saes trained: no trained SAEs for {lm.name} at layers {_ranges(missing)} "
                                    "yet, expected them trained once beforehand with `corrsteer train-sae` (in one "
                                    "process, not under torchrun)")
            print(f"corrsteer: no trained SAEs for {lm.name} at layers {_ranges(missing)} yet: training them first "
                  "(once), as `corrsteer train-sae` would", file=sys.stderr)
            with contextlib.redirect_stdout(sys.stderr):       # stdout is for the report
                _train(lm, TrainSAEConfig(model=cfg.model, device=cfg.device, dtype=cfg.dtype, sae_dir=cfg.sae_dir,
                                          layers=_ranges(missing)))
    _, dtype = cfg.device_dtype()
    return checks.load_bank(cfg, lm, lm.device, dtype)


def _ranges(layers) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    out, layers = [], sorted(layers)
    start = prev = layers[0]
    for L in layers[1:] + [None]:
        if L is not None and L == prev + 1:
            prev = L
            continue
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
        if L is not None:
            start = prev = L
    return ",".join(out)


def _task(cfg):
    from corrsteer.tasks.hub import HUB_TASKS, load_hub_task
    if not cfg.task_file and cfg.task in HUB_TASKS:
        return load_hub_task(cfg.task, cfg.protocol, cfg.task_path, cfg.constrain, cfg.scorer_models,
                             cfg.max_new_tokens, cfg.bbq_condition)
    return checks.task(cfg)


def _join(cfg):
    """This process's place in a torchrun job (a single process without one) and its device."""
    from corrsteer.pipeline import dist
    device, _ = cfg.device_dtype()
    d = dist.init(device)
    return d, dist.rank_device(device, d)


def cmd_run(cfg: RunConfig) -> int:
    """`corrsteer run`, and `corrsteer select` (cfg.select_only: stop once the plans are written)."""
    from corrsteer.sae.presets import apply_preset
    from corrsteer.pipeline.run import corrsteer_run
    from corrsteer.pipeline.seeds import run_seeds

    cfg = apply_preset(cfg)
    task = _task(cfg)
    checks.split_fits(task, cfg)
    out = cfg.out or f"runs/{task.name}"
    checks.writable_out(out)
    have = checks.sae_layers(cfg.saes)
    if have is not None:
        checks.layers_covered(cfg.layer_list, have, cfg.layers)
    d, device = _join(cfg)
    lm = _model(cfg, device=device)
    bank = _bank(lm, cfg)
    if cfg.seeds and not cfg.select_only:
        if d.active:
            raise SettingsError("--seeds runs one process: launch it without torchrun")
        run_seeds(lm, bank, task, out, cfg)
        print((Path(out) / "table.md").read_text())
        return 0
    res = corrsteer_run(lm, bank, task, out, cfg, sae_source=cfg.saes, dist=d)
    if not d.main:
        return 0
    if not cfg.select_only:
        print((Path(out) / "report.md").read_text())
        return 0
    for name, plan in res["plans"].items():
        feats = ", ".join(f"L{e.layer}:{f}x{c:.3g}" for e in plan.entries for f, c in zip(e.features, e.coefficients))
        print(f"CorrSteer-{name}: {feats or '(nothing kept)'}  -> {out}/plans/{name}.json")
    return 0


def cmd_eval(cfg: EvalConfig) -> int:
    from corrsteer.pipeline.run import eval_plan

    plan = checks.plan_file(cfg.plan)
    task = _task(cfg)
    checks.split_fits(task, cfg)
    out = cfg.out or f"runs/{task.name}/eval"
    checks.writable_out(out)
    d, device = _join(cfg)
    lm = _model(cfg, default=plan.model, device=device)
    checks.plan_fits(plan, cfg.plan, lm)
    c = eval_plan(lm, task, plan, out, cfg, dist=d)["comparison"]
    if not d.main:
        return 0
    print(f"{plan.name} on {task.name}: {100 * c.acc:.1f}% [{100 * c.lo:.1f}, {100 * c.hi:.1f}] vs baseline "
          f"{100 * c.base_acc:.1f}%  delta {100 * c.delta:+.1f} points, McNemar p {c.p_value:.3g}, SER {c.ser:.3f} "
          f"(n={c.n})")
    return 0


def cmd_generate(cfg: GenerateConfig) -> int:
    from corrsteer.model.generate import generate_batch

    plan = checks.plan_file(cfg.plan)
    lm = _model(cfg, default=plan.model)
    checks.plan_fits(plan, cfg.plan, lm)
    out = generate_batch(lm, [cfg.prompt], cfg.max_new_tokens, plans=[{}, plan.hook_vectors()],
                         steer_prompt=plan.all_positions)
    print(f"--- baseline\n{out.texts[0]}\n--- steered ({plan.name})\n{out.texts[1]}")
    return 0


HANDLERS = {
    "train-sae": (cmd_train_sae, "train TopK SAEs for a model's layers and cache them (sae-lens format)"),
    "run": (cmd_run, "select -> validate -> test CorrSteer S/A/P on a task and write a report"),
    "select": (cmd_run, "collect and select only: write statistics and plans, no test"),
    "eval": (cmd_eval, "a saved plan vs the unsteered model on the task's test split"),
    "generate": (cmd_generate, "baseline and steered answers side by side"),
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="corrsteer", description="CorrSteer: correlation-based SAE steering")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, (_, text) in HANDLERS.items():
        add_options(sub.add_parser(name, help=text, description=text), COMMANDS[name])
    return ap


def parse_settings(argv=None, parser: argparse.ArgumentParser | None = None):
    """The settings a command line asks for: --config's file, then the options given, then the defaults."""
    given = vars((parser or build_parser()).parse_args(argv))
    cls = COMMANDS[given.pop("cmd")]
    config = given.pop("config", None)
    return load_settings(cls, given, config)


def main(argv=None) -> int:
    ap = build_parser()
    ok = False
    try:
        cfg = parse_settings(argv, ap)
        rc = HANDLERS[cfg.command][0](cfg)
        ok = rc == 0
        return rc
    except SettingsError as e:
        ap.error(str(e))        # "corrsteer: error: <message>", exit status 2
    except checks.RunError as e:       # the data gave no result: exit status 1
        print(f"corrsteer: error: {e}", file=sys.stderr)
        return 1
    finally:
        if "corrsteer.pipeline.dist" in sys.modules:
            sys.modules["corrsteer.pipeline.dist"].shutdown(ok)


if __name__ == "__main__":
    sys.exit(main())
