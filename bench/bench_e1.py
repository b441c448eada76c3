"""E1: batched validation of every layer's feature with a shared prefill / the paper code's method.

    python3 -m bench.bench_e1                        # cuda: random Gemma-2 2B (bench/configs/gemma-2-2b.json), bf16
    python3 -m bench.bench_e1 --device cpu           # cpu: the default model (SmolLM2-135M), fp32
    python3 -m bench.bench_e1 --device cpu --quick   # seconds: every code path

Plans: {"baseline": {}, "L<l>": {blocks.l.hook_resid_post: coef * W_dec[f]}} for --layers layers (one random feature
of a random 16k SAE each, built with SteeringPlan.from_features as `corrsteer run` does).
  batched = corrsteer.pipeline.runner.run_plans(lm, task, items, plans, batch_size, "validate")  (every plan in one
            pass, one prefill per prompt shared by its copies)
  anchor  = the paper code's method: HF model.generate, greedy, batch 1, one plan at a time, the vector added by a
            plain forward hook at the layer output (last prompt position in the prefill, every decode step)
  hf_batched = HF model.generate per plan as the anchor, but --batch-size prompts at a time (left padded): what
            batching alone gives, so anchor / hf_batched and hf_batched / batched separate the batching gain from
            the shared prefill's (and our decode loop's) own
ratio = anchor / batched (target >= 10). The anchor runs on the first --anchor-samples samples only; its time is
extrapolated linearly to all samples when that is fewer (`anchor_extrapolated` in the JSON says so). A random model
decodes one repeated token, so on random models a fixed EOS schedule (bench/eos_schedule.py, --eos-every, default
max_new_tokens) ends rows after 1..every tokens by prompt length, on every side alike.
"""
from __future__ import annotations

import os
import sys
import traceback
from types import SimpleNamespace

import torch

from bench import eos_schedule as eos
from bench.common import HERE, base_parser, bench_task, finish_args, load_lm, random_bank, wall, write_json
from corrsteer.model.hooks import hooked
from corrsteer.model.steer import SteeringPlan
from corrsteer.pipeline.runner import run_plans

GEMMA_CFG = os.path.join(HERE, "configs", "gemma-2-2b.json")


def make_plans(lm, bank, coef, seed):
    g = torch.Generator().manual_seed(seed)
    plans = {"baseline": None}
    for L, e in bank:
        f = int(torch.randint(e.sae.d_sae, (1,), generator=g))
        plans[f"L{L}"] = SteeringPlan.from_features(f"L{L}", lm.name, "random", bank,
                                                    [SimpleNamespace(layer=L, feature=f, coef=coef, r=0.0)])
    return plans


def anchor(lm, task, items, plans, batch_size=1):
    """HF generate, batch_size prompts at a time (left padded; 1: the paper code's method), one plan at a time,
    steering through a plain forward hook: {plan: [texts]}."""
    tok, model, dev = lm.tokenizer, lm.model, lm.device
    dtype = next(model.parameters()).dtype
    texts = {}
    for name, plan in plans.items():
        vecs = {} if plan is None else {hp: v.to(dev, dtype) for hp, v in plan.hook_vectors().items()}

        def adder(v):
            def fn(h):
                h[:, -1].add_(v)           # prefill: the last prompt token; decode: the new token
                return None
            return fn
        out_texts = []
        with hooked(lm.layers, {hp: adder(v) for hp, v in vecs.items()}):
            for i in range(0, len(items), batch_size):
                enc = tok([lm.format(it.prompt) for it in items[i:i + batch_size]], return_tensors="pt",
                          padding=True, add_special_tokens=not lm.has_chat_template).to(dev)
                out = model.generate(**enc, max_new_tokens=task.max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
                out_texts += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        texts[name] = out_texts
    return texts


def main():
    ap = base_parser(__doc__)
    ap.add_argument("--model", default=None, help="'default' or a config JSON (default: gemma-2-2b.json on cuda)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--anchor-samples", type=int, default=None, help="samples the batch-1 anchor runs on")
    ap.add_argument("--batch-size", type=int, default=None, help="run_plans batch_size (rows = 4x this)")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--layers", default=None, help="comma list of layers (default: evenly spaced)")
    ap.add_argument("--n-layers", type=int, default=None)
    ap.add_argument("--d-sae", type=int, default=None)
    ap.add_argument("--coef", type=float, default=4.0)
    eos.add_argument(ap)
    args = finish_args(ap.parse_args())
    gpu, q = args.device == "cuda", args.quick
    args.model = args.model or (GEMMA_CFG if gpu else "default")
    args.samples = args.samples or (2 if q else 32 if gpu else 8)
    args.anchor_samples = min(args.samples, args.anchor_samples or (1 if q else 4 if gpu else 8))
    args.batch_size = args.batch_size or (2 if q else 16 if gpu else 8)
    args.max_new_tokens = args.max_new_tokens or (3 if q else 16 if gpu else 8)
    args.d_sae = args.d_sae or (16384 if gpu else 256 if q else 1024)
    n_layers = args.n_layers or (2 if q else 4 if gpu else 3)

    lm, desc = load_lm(args, args.model)
    every = eos.period(args)
    with eos.eos_schedule(lm, every):
        res = measure(args, lm, desc, n_layers, every)
    write_json("e1", args, res)
    if "ratio" in res:
        ex = " (extrapolated x%.1f from %d samples)" % (res["anchor_scale"], args.anchor_samples) \
            if res["anchor_extrapolated"] else ""
        print(f"E1: {len(res['plans'])} plans x {res['samples']} samples, {args.max_new_tokens} new tokens\n"
              f"  batched run_plans   {res['batched_s']:9.3f} s\n"
              f"  HF generate batched {res['hf_batched_s']:9.3f} s  (per plan, --batch-size prompts)\n"
              f"  anchor batch-1 HF   {res['anchor_s']:9.3f} s{ex}\n"
              f"  anchor / batched    {res['ratio']:9.2f}x  (target >= 10, pass {res['pass']}); "
              f"hf_batched / batched {res['hf_batched_over_batched']:.2f}x; anchor / hf_batched "
              f"{res['anchor_over_hf_batched']:.2f}x; same text {res['same_text_fraction']:.2f}")
    return 0 if not res["errors"] else 1


def measure(args, lm, desc, n_layers, every) -> dict:
    """The three methods timed on lm (inside its EOS schedule)."""
    if args.layers:
        layers = [int(s) for s in args.layers.split(",")]
    else:
        layers = sorted({round((i + 0.5) * lm.n_layers / n_layers) for i in range(n_layers)})
    bank = random_bank(lm, layers, args.d_sae, args.device, args.torch_dtype, w_dec=True)
    task, items = bench_task(args.samples, args.max_new_tokens, args.seed)
    plans = make_plans(lm, bank, args.coef, args.seed)
    batched_plans = {n: ({} if p is None else p.hook_vectors()) for n, p in plans.items()}
    res = dict(benchmark="E1 batched validation (shared prefill) / batch-1 HF generate per plan", model=desc,
               layers=layers, plans=list(plans), samples=len(items), anchor_samples=args.anchor_samples,
               batch_size=args.batch_size, rows_per_batch=max(1, args.batch_size * 4 // len(plans)) * len(plans),
               max_new_tokens=args.max_new_tokens, dtype=args.dtype_name, d_sae=args.d_sae, coef=args.coef,
               target=10.0, errors=[], **eos.described(every))
    try:
        # warm-up (kernels, caches, allocator) on one sample each side
        run_plans(lm, task, items[:1], batched_plans, args.batch_size, "warm-up")
        anchor(lm, task, items[:1], {n: plans[n] for n in list(plans)[:2]})
        rows, t_batched = wall(lambda: run_plans(lm, task, items, batched_plans, args.batch_size, "validate"),
                               args.device)
        texts, t_anchor = wall(lambda: anchor(lm, task, items[:args.anchor_samples], plans), args.device)
        hf_texts, t_hf = wall(lambda: anchor(lm, task, items, plans, args.batch_size), args.device)
        scale = len(items) / args.anchor_samples
        same = [rows[n][i]["output"].strip() == texts[n][i].strip() for n in plans for i in range(args.anchor_samples)]
        res.update(batched_s=t_batched, anchor_s_measured=t_anchor, anchor_extrapolated=scale != 1.0,
                   anchor_scale=scale, anchor_s=t_anchor * scale, ratio=t_anchor * scale / t_batched,
                   generations_batched=len(items) * len(plans), generations_anchor=args.anchor_samples * len(plans),
                   same_text_fraction=sum(same) / len(same), hf_batched_s=t_hf,
                   hf_batched_over_batched=t_hf / t_batched, anchor_over_hf_batched=t_anchor * scale / t_hf,
                   distinct_texts=len({r["output"] for rs in rows.values() for r in rs}),
                   same_text_hf_batched=sum(rows[n][i]["output"].strip() == hf_texts[n][i].strip()
                                            for n in plans for i in range(len(items))) / (len(items) * len(plans)))
        res["pass"] = res["ratio"] >= 10.0
        res["example"] = dict(plan=list(plans)[-1], batched=rows[list(plans)[-1]][0]["output"],
                              anchor=texts[list(plans)[-1]][0])
    except Exception as e:       # noqa: BLE001
        traceback.print_exc()
        res["errors"].append(f"{type(e).__name__}: {e}")
    return res


if __name__ == "__main__":
    sys.exit(main())
