"""Check (opt-in, needs lm-eval >= 0.4.9.2 installed): the lm-eval export steers lm-eval's own `steered` model the
way the plan steers ours, per token, on the default model; the same vectors one layer off must not.

    pip install 'lm-eval>=0.4.9.2'
    python -m bench.lmeval_check [--plan PLAN.json] [--n 32]

It loads the default model (float32) and a plan (--plan, or a random plan adding a vector of norm --norm at the
output of each of --layers), writes it with `corrsteer export --format lm-eval` (export_plan, every position) and
loads that file in lm-eval's SteeredModel (lm_eval/models/hf_steered.py) from the same HF directory, so lm-eval's
own loader and hooks (`steer`, `SteeredModel.add`) steer. For N chat-formatted prompts of a built-in task it takes
the per-token logits of our model unsteered and steered (SteeringPlan.apply, every position) and of SteeredModel
(`_model_call`), and compares the logit changes (steered - unsteered) of the two runtimes over every token: Pearson
correlation, max abs difference and the share of positions whose top token agrees. The control exports the plan with
every vector moved one layer down (layers.k -> layers.k-1) and must not match (verdict: bench/steer_compare.py). Writes
bench/results/lmeval-check-<device>-<date>.json.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from bench import steer_compare as C
from bench.common import base_parser, finish_args, write_json
from corrsteer.export.formats import export_plan
from corrsteer.model.lm import load_model, resolve_spec
from corrsteer.model.steer import load_plan


def lm_eval_logits(model_dir, plan, ids_list, tmp) -> list[torch.Tensor]:
    """Logits of lm-eval's SteeredModel loaded with the plan's lm-eval export."""
    from lm_eval.models.hf_steered import SteeredModel
    path = Path(tmp) / f"{plan.name}.pt"
    export_plan(plan, "lm-eval", path)
    lm = SteeredModel(pretrained=model_dir, steer_path=str(path), device="cpu", dtype="float32", batch_size=1)
    with torch.no_grad():
        return [lm._model_call(ids)[0].double() for ids in ids_list]


def main(argv=None):
    ap = base_parser(__doc__)
    ap.add_argument("--plan", default=None, help="a plan.json (default: a random plan, see --layers/--norm)")
    ap.add_argument("--layers", default="3,10,20,28", help="layers of the random plan")
    ap.add_argument("--norm", type=float, default=4.0, help="norm of each random vector")
    ap.add_argument("--task", default="sentiment")
    ap.add_argument("--n", type=int, default=32, help="prompts")
    args = finish_args(ap.parse_args(argv))
    import lm_eval  # optional: the whole script needs it

    lm = load_model("default")
    model_dir = resolve_spec("default")[1]
    plan = load_plan(args.plan) if args.plan else C.random_plan(lm, [int(x) for x in args.layers.split(",")],
                                                               args.norm, args.seed)
    plan.all_positions = True
    control = C.shifted(plan, C.control_shift(plan))
    ids_list = C.task_prompt_ids(lm, args.task, args.n, args.seed)
    print(f"{len(ids_list)} prompts, {sum(i.shape[1] for i in ids_list)} tokens", flush=True)
    base = torch.cat(C.our_logits(lm, None, ids_list))
    ours = torch.cat(C.our_logits(lm, plan, ids_list))
    print("ours done", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        theirs = torch.cat(lm_eval_logits(model_dir, plan, ids_list, tmp))
        print("lm-eval done", flush=True)
        theirs_control = torch.cat(lm_eval_logits(model_dir, control, ids_list, tmp))
    res = {"plan": args.plan or f"random, layers {args.layers}, norm {args.norm}, seed {args.seed}",
           "layers": C.plan_layers(plan), "task": args.task,
           "prompts": len(ids_list), "tokens": int(base.shape[0]), "model": lm.name, "lm_eval": lm_eval.__version__,
           "path": "lm_eval.models.hf_steered.SteeredModel._model_call (lm-eval's own loader and hooks)",
           "command": "python -m bench.lmeval_check " + " ".join(sys.argv[1:]),
           "lm-eval vs ours": C.compare(ours - base, theirs - base, ours, theirs),
           "control (vectors one layer off) vs ours": C.compare(ours - base, theirs_control - base, ours,
                                                              theirs_control)}
    res["verdict"] = C.verdict(res["lm-eval vs ours"], res["control (vectors one layer off) vs ours"])
    for k in ("lm-eval vs ours", "control (vectors one layer off) vs ours", "verdict"):
        print(k, {n: (round(v, 6) if isinstance(v, float) else v) for n, v in res[k].items()})
    write_json("lmeval-check", args, res)


if __name__ == "__main__":
    main()
