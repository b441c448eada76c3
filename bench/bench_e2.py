"""E2: collection (capture at every layer + fused stats per layer) / plain generation of the same prompts.

    python3 -m bench.bench_e2                        # cuda: random Gemma-2 2B (bench/configs/gemma-2-2b.json), bf16,
                                                     #   26 random 16k JumpReLU SAEs at blocks.L.hook_resid_post
    python3 -m bench.bench_e2 --device cpu           # cpu: the default model (SmolLM2-135M), small random SAEs, fp32
    python3 -m bench.bench_e2 --device cpu --quick   # seconds: every code path (memory part on a tiny random model)

Measured in one run on the same prompts, batches and max_new_tokens. A random model's greedy output is one token
repeated, so on a random model a fixed EOS schedule (bench/eos_schedule.py, --eos-every, default max_new_tokens)
ends each row after 1..every tokens by its prompt length, the same on every side; the real default model stops at
its own EOS on every side alike:
  collect   = corrsteer.pipeline.collect.collect(lm, bank, task, items, batch_size, pool)  (generate + capture + stats)
  plain     = corrsteer.model.generate.generate_batch(lm, prompts, max_new_tokens) per batch, no capture
  hf        = model.generate(greedy, same batches, left padded, max_new_tokens)
ratio = collect / plain (target <= 1.10) and collect / hf (second denominator), taken per repetition (the sides are
interleaved within each) and reported as median, min and max over --reps. CUDA: GPU busy time (kernel time from
torch.profiler over one pass of each side) beside wall time.
CUDA only: host syncs per decode step of one collection batch (torch.cuda.set_sync_debug_mode("warn"), warnings
counted / decode steps, target <= 1) and peak memory of collection at 1k and 8k samples (a smaller random model of
the same config: --mem-layers layers, --mem-new-tokens steps; equal within 5%).
"""
from __future__ import annotations

import gc
import os
import statistics
import sys
import traceback
from collections import Counter

import torch

from bench import eos_schedule as eos
from bench.common import (
    HERE,
    ROOT,
    base_parser,
    bench_task,
    finish_args,
    load_lm,
    print_table,
    random_bank,
    wall,
    write_json,
)
from corrsteer.model.generate import generate_batch
from corrsteer.pipeline.collect import collect
from corrsteer.pipeline.runner import prediction_rows
from corrsteer_kernels import CorrStats, encode_pool_stats

GEMMA_CFG = os.path.join(HERE, "configs", "gemma-2-2b.json")
TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16)


def batches(items, bs):
    return [items[i:i + bs] for i in range(0, len(items), bs)]


def run_collect(lm, bank, task, items, bs, pool):
    return collect(lm, bank, task, items, bs, pool, progress=False)


def run_lowlevel(lm, bank, task, items, bs, pool):
    """Fallback numerator: generate_batch with capture, then encode_pool_stats per layer on the bank's device."""
    stats = {L: CorrStats(e.sae.d_sae, device=e.sae.device) for L, e in bank}
    for b in batches(items, bs):
        out = generate_batch(lm, [it.prompt for it in b], task.max_new_tokens, capture=[e.hook for _, e in bank])
        y = torch.tensor([r["correct"] for r in prediction_rows(task, b, out.texts)])
        for L, e in bank:
            dev = e.sae.device
            encode_pool_stats(out.captured[e.hook].to(dev, e.sae.W_enc.dtype), out.lengths.to(dev), y.to(dev),
                              e.sae, stats[L], pool)
    return stats


def run_capture(lm, bank, task, items, bs):
    """Diagnostic side: generation with every layer's capture but no encoding (splits collect's overhead into the
    capture hooks' share and the encode/stats share)."""
    for b in batches(items, bs):
        generate_batch(lm, [it.prompt for it in b], task.max_new_tokens, capture=[e.hook for _, e in bank])


def run_plain(lm, task, items, bs):
    """(decode steps of the longest row, every row's length, distinct output texts)."""
    lengths, texts = [], set()
    for b in batches(items, bs):
        out = generate_batch(lm, [it.prompt for it in b], task.max_new_tokens)
        lengths += out.lengths.tolist()
        texts.update(out.texts)
    return max(lengths, default=0), lengths, len(texts)


def run_hf(lm, task, items, bs):
    tok, steps = lm.tokenizer, 0
    for b in batches(items, bs):
        enc = tok([lm.format(it.prompt) for it in b], return_tensors="pt", padding=True,
                  add_special_tokens=not lm.has_chat_template).to(lm.device)
        out = lm.model.generate(**enc, max_new_tokens=task.max_new_tokens, do_sample=False,
                                pad_token_id=tok.pad_token_id)
        steps = max(steps, out.shape[1] - enc["input_ids"].shape[1])
    return steps


def gpu_busy(fn) -> dict:
    """CUDA: seconds of device kernel time (torch.profiler) over one call of fn, beside its wall time."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _, t = wall(fn, "cuda")
    busy = sum(getattr(e, "device_time", None) or getattr(e, "cuda_time", 0) for e in prof.events()
               if e.device_type.name == "CUDA") / 1e6
    return dict(busy_s=busy, wall_s=t, busy_fraction=busy / t if t else None)


def paired_ratios(times: dict, over: str) -> dict:
    """Per side, its per-repetition time / the `over` side's in the same repetition: median, min, max."""
    out = {}
    for k, v in times.items():
        if k != over:
            r = [a / b for a, b in zip(v, times[over])]
            out[k] = dict(median=statistics.median(r), min=min(r), max=max(r), all=r)
    return out


def count_syncs(fn) -> tuple[int, list]:
    """Host syncs CUDA reports while fn runs (set_sync_debug_mode 'warn'), and their most common source lines."""
    from corrsteer.model.profiling import host_sync_warnings
    hits = host_sync_warnings(fn)
    where = Counter(f"{os.path.relpath(w.filename, ROOT) if w.filename.startswith(ROOT) else w.filename}:{w.lineno}"
                    for w in hits)
    return len(hits), where.most_common(12)


def memory_part(args, res):
    """Peak device memory of collection at each of --mem-samples on a smaller random model (same config)."""
    over = dict(num_hidden_layers=args.mem_layers, **(TINY if args.device == "cpu" else {}))
    args.config_overrides = over
    lm, desc = load_lm(args, GEMMA_CFG)
    bank = random_bank(lm, range(lm.n_layers), args.mem_d_sae, args.device, args.torch_dtype)
    task, items = bench_task(max(args.mem_samples), args.mem_new_tokens, args.seed + 1)
    fn = run_collect if res["numerator"] == "collect" else run_lowlevel
    fn(lm, bank, task, items[:args.batch_size], args.batch_size, args.pool)     # warm-up
    peaks = {}
    for n in args.mem_samples:
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        _, t = wall(lambda: fn(lm, bank, task, items[:n], args.batch_size, args.pool), args.device)
        peaks[n] = dict(seconds=t, peak_bytes=torch.cuda.max_memory_allocated() if args.device == "cuda" else None)
    lo, hi = min(args.mem_samples), max(args.mem_samples)
    ratio = (peaks[hi]["peak_bytes"] / peaks[lo]["peak_bytes"]) if args.device == "cuda" else None
    res["memory"] = dict(model=desc, layers=lm.n_layers, d_sae=args.mem_d_sae, max_new_tokens=args.mem_new_tokens,
                         batch_size=args.batch_size, peaks=peaks, ratio_hi_over_lo=ratio, target="within 5%",
                         **{"pass": None if ratio is None else abs(ratio - 1) <= 0.05})


def main():
    ap = base_parser(__doc__)
    ap.add_argument("--model", default=None, help="'default' or a config JSON (default: gemma-2-2b.json on cuda)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--d-sae", type=int, default=None, help="SAE width (default 16384 on cuda, 1024 on cpu)")
    ap.add_argument("--pool", default="max", choices=["max", "mean"])
    ap.add_argument("--reps", type=int, default=None, help="timed passes per side (median)")
    ap.add_argument("--mem-samples", default=None, help="comma list (default 1024,8192 on cuda; skipped on cpu)")
    ap.add_argument("--mem-layers", type=int, default=2)
    ap.add_argument("--mem-new-tokens", type=int, default=4)
    ap.add_argument("--mem-d-sae", type=int, default=None)
    eos.add_argument(ap)
    args = finish_args(ap.parse_args())
    gpu, q = args.device == "cuda", args.quick
    args.model = args.model or (GEMMA_CFG if gpu else "default")
    args.samples = args.samples or (4 if q else 256 if gpu else 16)
    args.batch_size = args.batch_size or (2 if q else 64 if gpu else 8)
    args.max_new_tokens = args.max_new_tokens or (4 if q else 32 if gpu else 16)
    args.d_sae = args.d_sae or (16384 if gpu else 256 if q else 1024)
    args.mem_d_sae = args.mem_d_sae or (16384 if gpu else 128)
    args.reps = args.reps or (2 if q else 5)
    mem = args.mem_samples or ("1024,8192" if gpu else "4,8" if q else "")
    args.mem_samples = [int(s) for s in mem.split(",") if s]

    lm, desc = load_lm(args, args.model)
    every = eos.period(args)
    with eos.eos_schedule(lm, every):
        res = timed_part(args, lm, desc, every)
    lm = None                      # free the big model before the memory part
    gc.collect()
    write_json("e2", args, res, quiet=True)      # kept if the memory part runs out of time
    if args.mem_samples:
        try:
            memory_part(args, res)
        except Exception as e:   # noqa: BLE001
            traceback.print_exc()
            res["errors"].append(f"memory: {type(e).__name__}: {e}")
    write_json("e2", args, res)
    med = res["median_s"]
    rows = [dict(what=k, seconds=v, ratio=med[k] / med["plain"]) for k, v in med.items()]
    print_table(rows, [("what", "side", ""), ("seconds", "median s", ".3f"), ("ratio", "/plain", ".3f")])
    s, m = res.get("syncs"), res.get("memory")
    print(f"collect/plain paired median {res['collect_over_plain']:.3f} (target <= 1.05, every repetition <= 1.10, "
          f"pass {res['pass']}); numerator {res['numerator']}; syncs/step {s and s['per_step_collect']}; memory "
          f"{m and {k: v['peak_bytes'] for k, v in m['peaks'].items()}} ratio {m and m['ratio_hi_over_lo']}; "
          f"errors {len(res['errors'])}")
    return 0 if not res["errors"] else 1


def timed_part(args, lm, desc, every) -> dict:
    """Everything measured on the main model (inside its EOS schedule): the interleaved timings, GPU busy time and
    host syncs."""
    gpu = args.device == "cuda"
    bank = random_bank(lm, range(lm.n_layers), args.d_sae, args.device, args.torch_dtype)
    task, items = bench_task(args.samples, args.max_new_tokens, args.seed)
    res = dict(benchmark="E2 collection / plain generation", model=desc, layers=lm.n_layers, d_model=lm.d_model,
               sae=dict(d_sae=args.d_sae, activation="jumprelu", hook="blocks.L.hook_resid_post", count=len(bank)),
               samples=len(items), batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, pool=args.pool,
               dtype=args.dtype_name, reps=args.reps, numerator="collect", errors=[],
               **eos.described(every))
    warm = items[:args.batch_size]
    try:
        run_collect(lm, bank, task, warm, args.batch_size, args.pool)
    except Exception as e:       # noqa: BLE001  (collect not device-ready: time the lower-level path instead)
        traceback.print_exc()
        res["errors"].append(f"collect: {type(e).__name__}: {e}")
        res["numerator"] = "generate_batch(capture)+encode_pool_stats"
        run_lowlevel(lm, bank, task, warm, args.batch_size, args.pool)
    num = run_collect if res["numerator"] == "collect" else run_lowlevel
    run_plain(lm, task, warm, args.batch_size)
    run_hf(lm, task, warm, args.batch_size)
    run_capture(lm, bank, task, warm, args.batch_size)
    times = {"collect": [], "plain": [], "hf": [], "capture": []}
    for _ in range(args.reps):     # interleaved, so drift hits every side alike
        times["collect"].append(wall(lambda: num(lm, bank, task, items, args.batch_size, args.pool), args.device)[1])
        (steps, lengths, n_texts), t = wall(lambda: run_plain(lm, task, items, args.batch_size), args.device)
        times["plain"].append(t)
        hf_steps, t = wall(lambda: run_hf(lm, task, items, args.batch_size), args.device)
        times["hf"].append(t)
        times["capture"].append(wall(lambda: run_capture(lm, bank, task, items, args.batch_size), args.device)[1])
    med = {k: statistics.median(v) for k, v in times.items()}
    over_plain, over_hf = paired_ratios(times, "plain"), paired_ratios(times, "hf")
    res.update(times_s=times, median_s=med, decode_steps_plain=steps, decode_steps_hf=hf_steps,
               lengths=dict(mean=statistics.mean(lengths), min=min(lengths), max=max(lengths)),
               distinct_texts=n_texts, paired_over_plain=over_plain, paired_over_hf=over_hf,
               collect_over_plain=over_plain["collect"]["median"], collect_over_hf=over_hf["collect"]["median"],
               plain_over_hf=over_hf["plain"]["median"], capture_over_plain=over_plain["capture"]["median"],
               target=1.10, target_each_rep=1.10)
    res["pass"] = over_plain["collect"]["median"] <= 1.05 and over_plain["collect"]["max"] <= 1.10
    c = over_plain["collect"]
    print(f"collect {med['collect']:.3f} s  plain {med['plain']:.3f} s  hf {med['hf']:.3f} s  collect/plain paired "
          f"median {c['median']:.3f} [{c['min']:.3f}, {c['max']:.3f}]  collect/hf {res['collect_over_hf']:.3f}  "
          f"lengths {res['lengths']}  distinct texts {n_texts}", flush=True)
    if gpu:
        res["gpu_busy"] = {"collect": gpu_busy(lambda: num(lm, bank, task, items, args.batch_size, args.pool)),
                           "plain": gpu_busy(lambda: run_plain(lm, task, items, args.batch_size))}
        warm_steps = run_plain(lm, task, warm, args.batch_size)[0]
        n, where = count_syncs(lambda: num(lm, bank, task, warm, args.batch_size, args.pool))
        n_plain, where_plain = count_syncs(lambda: run_plain(lm, task, warm, args.batch_size))
        res["syncs"] = dict(collect_batch=n, plain_batch=n_plain, decode_steps=warm_steps,
                            per_step_collect=n / warm_steps, per_step_plain=n_plain / warm_steps,
                            target_per_step=1, top_collect=where, top_plain=where_plain,
                            **{"pass": n / warm_steps <= 1})
        print(f"host syncs per decode step: collect {n / warm_steps:.2f}, plain {n_plain / warm_steps:.2f}",
              flush=True)
    else:
        res["syncs"] = None
    return res


if __name__ == "__main__":
    sys.exit(main())
