"""What the no-SAE baselines' own validation (corrsteer/pipeline/baselines.py) adds to a `corrsteer run`.

One small run of the default model on a built-in task, with random SAEs at the run's layers (the baselines never
read them; P's stages get a realistic number of layers to validate), each stage of corrsteer_run timed by wrapping
it: collection, P's validation and prefix search, the baselines' validation (both passes), test and prompting. The
JSON gives each stage's seconds, the baselines' share of the run, and the generations each validation makes.

    python -m bench.baseline_validation --task sentiment --n-select 48 --n-val 16 --n-test 48 --layers 10-14
"""
from __future__ import annotations

import tempfile
import time

from bench.common import base_parser, finish_args, load_lm, random_bank, write_json
from corrsteer.config import RunConfig, parse_layers
from corrsteer.pipeline import run as R
from corrsteer.tasks.task import get_task

STAGES = ("collect_stage", "validate_stage", "prefix_stage", "baseline_stage", "test_stage", "prompt_stage")


def timed(seconds: dict, name: str, fn):
    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
    return wrapper


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--n-select", type=int, default=48)
    ap.add_argument("--n-val", type=int, default=16)
    ap.add_argument("--n-test", type=int, default=48)
    ap.add_argument("--layers", default="10-14")
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--batch-size", type=int, default=16)
    args = finish_args(ap.parse_args())
    lm, model_desc = load_lm(args, "default")
    layers = parse_layers(args.layers)
    bank = random_bank(lm, layers, args.d_sae, args.device, args.torch_dtype, w_dec=True)
    cfg = RunConfig(task=args.task, n_select=args.n_select, n_val=args.n_val, n_test=args.n_test, layers=args.layers,
                    batch_size=args.batch_size, seed=args.seed)
    seconds: dict = {}
    for name in STAGES:
        setattr(R, name, timed(seconds, name, getattr(R, name)))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        res = R.corrsteer_run(lm, bank, get_task(args.task), out, cfg, sae_source="random")
    total = time.perf_counter() - t0
    s = res.settings
    L = len(layers)
    write_json("baseline-validation", args, dict(
        model=model_desc, task=args.task, sizes=[args.n_select, args.n_val, args.n_test], layers=layers,
        saes=f"random jumprelu, d_sae {args.d_sae} (the baselines do not read them)",
        seconds=dict(seconds, total=total), baselines_share_of_run=seconds["baseline_stage"] / total,
        baselines_vs_p_validation=seconds["baseline_stage"] / (seconds["validate_stage"] + seconds["prefix_stage"]),
        generations_per_val_item=dict(baselines=2 * L + 3, p_validate=L + 1, p_prefix_at_most=max(0, L - 1)),
        chosen=dict(raw_residual=s["raw_residual"], mean_difference_layer=s["mean_difference_layer"],
                    mean_difference_scale=s["mean_difference_scale"])))


if __name__ == "__main__":
    main()
