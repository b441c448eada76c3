"""corrsteer command line: `corrsteer train-sae ...` (more subcommands come with the pipeline)."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _layers(text: str | None):
    if not text:
        return None
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return out


def quality_table(rows: list[dict]) -> str:
    lines = ["| layer | hook | d_sae | k | FVE | L0 | dead | s |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['hook']} | {r['d_sae']} | {r['k']} | {r['fve']:.3f} | {r['l0']:.1f} | "
                     f"{100 * r['dead']:.1f}% | {r['seconds']:.1f} |")
    fves = [r["fve"] for r in rows]
    lines.append(f"\nFVE min {min(fves):.3f}, median {statistics.median(fves):.3f}; "
                 f"dead max {100 * max(r['dead'] for r in rows):.1f}%")
    return "\n".join(lines)


def cmd_train_sae(args) -> int:
    from .models import load_model
    from .paths import sae_cache_dir
    from .train_sae import TrainConfig, train_bank

    t0 = time.time()
    lm = load_model(args.model)
    out = sae_cache_dir(lm.name, args.sae_dir)
    print(f"corrsteer: SAEs for {lm.name} ({lm.n_layers} layers, d_model {lm.d_model}) -> {out}", file=sys.stderr)
    layers = _layers(args.layers) or list(range(lm.n_layers))
    stored = out / "quality.json"
    hook = f"hook_resid_{args.hook}"
    if not args.force and stored.exists() and all((out / f"blocks.{L}.{hook}" / "cfg.json").exists() for L in layers):
        rows = [r for r in json.loads(stored.read_text())["rows"] if r["layer"] in layers]
        if len(rows) == len(layers):
            print(quality_table(rows) + f"\n(cached in {out}; --force retrains)")
            return 0
    cfg = TrainConfig(d_sae=args.d_sae, k=args.k, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed)
    rows = train_bank(lm, out, layers=layers, point=args.hook, cfg=cfg,
                      train_tokens=args.train_tokens, eval_tokens=args.eval_tokens, dataset=args.dataset,
                      force=args.force)
    meta, rows = rows[-1], rows[:-1]
    table = quality_table(rows)
    total = time.time() - t0
    summary = (f"held-out: {meta['eval_tokens']} tokens of text not trained on (first position and the shared "
               f"system prompt excluded); activations collected in {meta['collect_seconds']:.0f} s; "
               f"total {total:.0f} s")
    print(table + "\n" + summary)
    (out / "quality.md").write_text(f"# SAEs for {lm.name}\n\n{table}\n\n{summary}\n")
    (out / "quality.json").write_text(json.dumps(dict(model=lm.name, rows=rows, **meta, total_seconds=total),
                                                 indent=2))
    return 0


def _bank(lm, args):
    from .paths import sae_cache_dir
    from .saes import load_bank
    from .train_sae import train_bank

    if args.saes == "trained" and not (sae_cache_dir(lm.name, args.sae_dir) / "quality.json").exists():
        print(f"corrsteer: no trained SAEs for {lm.name} yet: training them first (once)", file=sys.stderr)
        rows = train_bank(lm, sae_cache_dir(lm.name, args.sae_dir))
        print(quality_table(rows[:-1]), file=sys.stderr)
    return load_bank(args.saes, lm=lm, layers=_layers(args.layers), sae_dir=args.sae_dir)


def _task(args):
    from .tasks import get_task, load_task_file
    return load_task_file(args.task_file) if args.task_file else get_task(args.task, seed=args.seed)


def cmd_run(args) -> int:
    from .models import load_model
    from .run import corrsteer_run

    lm = load_model(args.model)
    bank = _bank(lm, args)
    task = _task(args)
    out = args.out or f"runs/{task.name}"
    corrsteer_run(lm, bank, task, out, _run_config(args), sae_source=args.saes)
    print((__import__("pathlib").Path(out) / "report.md").read_text())
    return 0


def _run_config(args, **kw):
    from .run import RunConfig
    return RunConfig(n_select=args.n_select, n_val=args.n_val, n_test=args.n_test, batch_size=args.batch_size,
                     pool=args.pool, coef=args.coef, scale=args.scale, seed=args.seed,
                     all_positions=args.all_positions,
                     variants=("S", "A", "P") if args.variant == "all" else (args.variant,), **kw)


def cmd_select(args) -> int:
    from .models import load_model
    from .run import corrsteer_run

    lm = load_model(args.model)
    task = _task(args)
    out = args.out or f"runs/{task.name}"
    res = corrsteer_run(lm, _bank(lm, args), task, out, _run_config(args, select_only=True), sae_source=args.saes)
    for name, plan in res["plans"].items():
        feats = ", ".join(f"L{e.layer}:{f}x{c:.3g}" for e in plan.entries for f, c in zip(e.features, e.coefficients))
        print(f"CorrSteer-{name}: {feats or '(nothing kept)'}  -> {out}/plans/{name}.json")
    return 0


def cmd_eval(args) -> int:
    from .models import load_model
    from .run import eval_plan
    from .steer import SteeringPlan

    plan = SteeringPlan.load(args.plan)
    lm = load_model(args.model or plan.model)
    task = _task(args)
    c = eval_plan(lm, task, plan, args.out or f"runs/{task.name}/eval", _run_config(args))["comparison"]
    print(f"{plan.name} on {task.name}: {100 * c.acc:.1f}% [{100 * c.lo:.1f}, {100 * c.hi:.1f}] vs baseline "
          f"{100 * c.base_acc:.1f}%  delta {100 * c.delta:+.1f} points, McNemar p {c.p_value:.3g}, SER {c.ser:.3f} "
          f"(n={c.n})")
    return 0


def cmd_generate(args) -> int:
    from .generate import generate_batch
    from .models import load_model
    from .steer import SteeringPlan

    plan = SteeringPlan.load(args.plan)
    lm = load_model(args.model or plan.model)
    out = generate_batch(lm, [args.prompt], args.max_new_tokens, plans=[{}, plan.hook_vectors()],
                         steer_prompt=plan.all_positions)
    print(f"--- baseline\n{out.texts[0]}\n--- steered ({plan.name})\n{out.texts[1]}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="corrsteer", description="CorrSteer: correlation-based SAE steering")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train-sae", help="train TopK SAEs for a model's layers and cache them (sae-lens format)")
    t.add_argument("--model", default="default", help="default | gemma3-270m | path.gguf | HF dir | HF id")
    t.add_argument("--layers", default=None, help="e.g. 0-29 or 3,15,27 (default: all)")
    t.add_argument("--hook", default="post", choices=["post", "pre"], help="resid_post (layer output) or resid_pre")
    t.add_argument("--d-sae", type=int, default=2304)
    t.add_argument("--k", type=int, default=32)
    t.add_argument("--epochs", type=float, default=3.0)
    t.add_argument("--batch-size", type=int, default=1024)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--train-tokens", type=int, default=80_000)
    t.add_argument("--eval-tokens", type=int, default=8_000)
    t.add_argument("--dataset", default=None, help="HF dataset name[:config] with a text column (online only)")
    t.add_argument("--sae-dir", default=None, help="where to save (default $CORRSTEER_SAE_DIR or ~/.cache/corrsteer/saes/<model>)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--force", action="store_true", help="retrain layers that are already cached")
    t.set_defaults(fn=cmd_train_sae)
    def task_args(p, model_default="default"):
        p.add_argument("--model", default=model_default)
        p.add_argument("--task", default="sentiment", help="a built-in task (see corrsteer.tasks.list_tasks())")
        p.add_argument("--task-file", default=None, help="a JSONL task file (see README)")
        p.add_argument("--n-select", type=int, default=192)
        p.add_argument("--n-val", type=int, default=48)
        p.add_argument("--n-test", type=int, default=192)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=None, help="output directory (default runs/<task>)")

    def select_args(p):
        p.add_argument("--saes", default="trained", help="trained | release:<name> | path to sae-lens dirs")
        p.add_argument("--sae-dir", default=None)
        p.add_argument("--layers", default=None, help="e.g. 0-29 (default: every layer of the bank)")
        p.add_argument("--variant", default="all", choices=["S", "A", "P", "all"],
                       help="which CorrSteer variants to build (P adds the validation pass)")
        p.add_argument("--pool", default="max", choices=["max", "mean"])
        p.add_argument("--coef", default="mean", choices=["mean", "active"],
                       help="coefficient: mean pooled activation over correct samples (or over those where active)")
        p.add_argument("--scale", type=float, default=1.0)
        p.add_argument("--all-positions", action="store_true", help="steer the prompt too, not only generation")

    r = sub.add_parser("run", help="select -> validate -> test CorrSteer S/A/P on a task and write a report")
    task_args(r)
    select_args(r)
    r.set_defaults(fn=cmd_run)
    s_ = sub.add_parser("select", help="collect and select only: write stats and plans, no test")
    task_args(s_)
    select_args(s_)
    s_.set_defaults(fn=cmd_select)
    e = sub.add_parser("eval", help="a saved plan vs the unsteered model on the task's test split")
    task_args(e, model_default=None)
    e.add_argument("--plan", required=True)
    e.add_argument("--pool", default="max")
    e.add_argument("--coef", default="mean")
    e.add_argument("--scale", type=float, default=1.0)
    e.add_argument("--all-positions", action="store_true")
    e.add_argument("--variant", default="all")
    e.set_defaults(fn=cmd_eval)
    g = sub.add_parser("generate", help="baseline and steered answers side by side")
    g.add_argument("--plan", required=True)
    g.add_argument("--model", default=None)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("prompt")
    g.set_defaults(fn=cmd_generate)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
