"""K1: fused encode -> pool -> stats on packed tokens / a bare GEMM of the same packed tokens.

    python3 -m bench.bench_k1                      # cuda when available (bf16, ~8k tokens), else cpu (fp32, small)
    python3 -m bench.bench_k1 --device cpu --quick # seconds: checks every code path
    python3 -m bench.bench_k1 --layout padded      # x as [B, T, d_in] (the GEMM still covers only the valid tokens)

Per case (SAE shape, activation, pool, token pattern), all timed in one run on the same inputs:
  fused       = encode_pool_stats_prepared(xp, batch, sae, stats, pool) with batch = prepare_batch(lengths, y) made
                once (what collection runs per layer; --layout padded: encode_pool_stats(x, ..., check=False));
                unprepared = encode_pool_stats(x, lengths, y, ..., check=False); fused_checked (GPU) = with checks
  encode_pool = encode_pool(x, lengths, sae, pool, out=buf)           (pooled output preallocated)
  gemm        = torch.mm(xp, W_enc, out=buf)  xp = the N valid tokens packed [N, d_in], same dtype as W_enc
Per-case targets of fused / gemm (k1_cases.target_for): GPU bf16 (Hopper) <= 1.15 ragged, <= 1.10 one token per
sample and the Llama shape, TopK <= 3; CPU fp32 <= 1.25, TopK <= 1.5. Paired: each of
--reps repetitions times the GEMM and then each op back to back (CPU: one call each; GPU: a short do_bench each) and
the ratio is the median of the per-repetition ratios, with its spread (min, max) and every ratio in the JSON. Also per
case: launches per call of the fused op (torch.profiler: CUDA kernels on the GPU, top-level aten ops on the CPU; and
Triton launches counted by wrapping Triton's launch, against the target of 4 per prepared layer call); on
the GPU the fused op replayed from a CUDA graph beside its plain timing (or why it cannot be captured), the checked
call, and the GEMM rotating over input sets. N = 2048 (what collection passes per layer) and 8192 tokens.
TFLOP/s = 2 N d_in d_sae / time, against an 8192^3 bf16 matmul measured in the same run (CPU: 1024^3 in fp32).

Fail-soft: the cases run in a worker process (bench/isolate.py); a worker that crashes, hangs (--entry-timeout) or
runs past --deadline loses only its entry, recorded with its error, and the JSON is rewritten after every entry.
After the cases, the strategy comparison (k1_cases.STRATEGIES: fused, split, fused_n, the tuner with fused_n,
the combine kernel, TopK two-pass / one-pass / auto) runs in a second worker with those switches set per entry (the
only place they are set); on the CPU under the Triton interpreter at a tiny shape (code paths only, no target). A
strategy whose kernel family is switched off (CORRSTEER_DISABLE_KERNELS, e.g. by gpu.sh's smoke step) is skipped
with the reason.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

import torch

from bench.common import base_parser, finish_args, gemm_ceiling, print_table, random_sae, write_json
from bench.isolate import announce, report, run_entries
from bench.k1_cases import STRATEGIES, kernel_state, run_case, run_strategy
from corrsteer_kernels import encode_pool
from corrsteer_kernels._common import switched_off


def cases(device, quick):
    """(shape name, activation, pool, pattern, n_tokens). Every activation and pool appears at least once."""
    if quick:
        return [("gemma2-2b", "jumprelu", "max", "ragged", 64), ("gemma2-2b", "relu", "mean", "one", 32),
                ("topk-default", "topk", "max", "ragged", 64), ("topk-default", "topk", "mean", "one", 32)]
    if device != "cuda":
        return cpu_cases()
    out = []
    for n in (2048, 8192):          # 2048: what collection passes per layer; 8192: the earlier K1 size
        out += [("gemma2-2b", "jumprelu", "max", "ragged", n), ("gemma2-2b", "jumprelu", "mean", "ragged", n),
                ("gemma2-2b", "jumprelu", "max", "one", n), ("gemma2-2b", "relu", "max", "ragged", n),
                ("llama3.1-8b", "jumprelu", "max", "ragged", n), ("llama3.1-8b", "jumprelu", "max", "one", n),
                ("topk-default", "topk", "max", "ragged", n), ("topk-default", "topk", "mean", "ragged", n),
                ("topk-default", "topk", "max", "one", n)]
    return out


def cpu_cases():
    """The CPU targets' cases: 576 -> 16384 (the offline default's d_in), Gemma, TopK at N = 2048 and 8192 tokens,
    Llama at N = 512 (one GEMM takes seconds on 2 cores)."""
    out = []
    for n in (2048, 8192):
        for shape in ("d576-16k", "gemma2-2b"):
            if shape == "gemma2-2b" and n == 8192:
                continue
            out += [(shape, "jumprelu", "max", "ragged", n), (shape, "jumprelu", "mean", "ragged", n),
                    (shape, "jumprelu", "max", "one", n), (shape, "relu", "mean", "ragged", n)]
        out += [("topk-default", "topk", "max", "ragged", n), ("topk-default", "topk", "mean", "ragged", n),
                ("topk-default", "topk", "max", "one", n)]
    return out + [("llama3.1-8b", "jumprelu", "max", "ragged", 512), ("llama3.1-8b", "jumprelu", "max", "one", 512)]


def entries(args) -> dict:
    """{"main": [("ceiling",), ("case", ...)...], "strategies": [("strategy", ...)...]}: the same lists in the parent
    and its workers."""
    main = [("ceiling",)] + [("case", *c) for c in cases(args.device, args.quick)
                             if not ((args.only and args.only not in c[0]) or
                                     (args.max_tokens and c[4] > args.max_tokens))]
    strat = [] if args.no_strategies else [("strategy", *s) for s in STRATEGIES]
    return {"main": main, "strategies": strat}


def packed_supported() -> bool:
    """Probe the packed form on the CPU torch path (no Triton compile spent on a probe)."""
    sae = random_sae(16, 32, "relu")
    x, L = torch.randn(5, 16), torch.tensor([2, 3])
    try:
        z = encode_pool(x, L, sae, "max", backend="torch")
        return tuple(z.shape) == (2, 32)
    except Exception as e:            # noqa: BLE001  (the kernels' packed form has not landed: fall back)
        print(f"packed input not supported here ({type(e).__name__}: {e}); using padded [B, T, d_in]")
        return False


# ---------------------------------------------------------------------------------------------------------------
# worker: runs entries from --start on, one @@RESULT line each
# ---------------------------------------------------------------------------------------------------------------
def run_entry(e, args):
    if e[0] == "ceiling":
        return gemm_ceiling(args.device, torch.bfloat16 if args.device == "cuda" else args.torch_dtype,
                            n=256 if args.quick else None)
    if e[0] == "case":
        return run_case(*e[1:], args, ceiling=None)
    name, env, family, shape, activation = e[1:]
    if family and family in switched_off():
        return dict(strategy=name, switches=env, skipped=f"the {family} kernel is switched off: "
                                                        f"{switched_off()[family]}")
    return run_strategy(name, env, shape, activation, args, None)


def worker(args) -> int:
    todo = entries(args)[args.worker]
    for i in range(args.start, len(todo)):
        announce(i)
        try:
            payload = dict(result=run_entry(todo[i], args))
        except Exception as e:        # noqa: BLE001  (recorded, go on with the other entries)
            traceback.print_exc()
            payload = dict(error=f"{type(e).__name__}: {str(e)[:500]}")
        payload["kernel_state"] = kernel_state()
        report(i, payload)
        if args.device == "cuda":
            torch.cuda.empty_cache()      # the entry's inputs and buffers are gone with its frame
    return 0


# ---------------------------------------------------------------------------------------------------------------
# parent: runs the workers, collects, writes the JSON after every entry
# ---------------------------------------------------------------------------------------------------------------
class Collected:
    def __init__(self, args, todo):
        self.args, self.todo = args, todo
        self.ceiling, self.results, self.strategies, self.errors, self.state = None, [], [], [], {}

    def add(self, group, i, payload, save=True):
        e = self.todo[group][i]
        self.state[group] = payload.get("kernel_state", self.state.get(group))
        r = payload.get("result")
        if r is None:
            err = dict(group=group, entry=[str(v) for v in e[1:]] or [e[0]], error=payload["error"])
            self.errors.append(err)
            if group == "strategies":
                self.strategies.append(dict(strategy=e[1], switches=e[2], error=payload["error"]))
            print(f"K1 {group} entry {i} {e[1:3] if len(e) > 1 else e[0]}: {payload['error']}", flush=True)
        elif e[0] == "ceiling":
            self.ceiling = r
            print(f"GEMM ceiling: {r['n']}^3 {r['dtype']}: {r['tflops']:.3g} TFLOP/s", flush=True)
        else:
            if self.ceiling and "fused_tflops" in r:
                r["fused_pct_of_ceiling"] = 100 * r["fused_tflops"] / self.ceiling["tflops"]
            (self.strategies if group == "strategies" else self.results).append(r)
            show(r)
        if save:
            self.save(quiet=True)

    def save(self, quiet=False):
        res = self.results
        ok = bool(res) and not [e for e in self.errors if e["group"] == "main"] and all(r["pass"] for r in res)
        summary = dict(cases=len(res), errors=len(self.errors), all_pass=ok,
                       worst_fused_over_gemm=max((r["fused_over_gemm"] for r in res), default=None),
                       failed_cases=[f"{r['shape']} {r['activation']} {r['pool']} {r['pattern']} N={r['tokens']}"
                                     for r in res if not r["pass"]],
                       most_launches=max((r["launches"]["count"] for r in res), default=None),
                       strategies={s["strategy"]: s.get("fused_over_gemm", s.get("skipped", s.get("error")))
                                   for s in self.strategies})
        write_json("k1", self.args, dict(
            benchmark="K1 encode_pool_stats_prepared (collection's per-layer call) / bare GEMM of the same packed "
                      "tokens", layout=self.args.layout, gemm_ceiling=self.ceiling, summary=summary,
            cases=res, strategies=self.strategies, errors=self.errors, kernel_state=self.state), quiet=quiet)


def show(r):
    if r.get("skipped"):
        print(f"{r['strategy']:>14}: skipped ({r['skipped']})", flush=True)
        return
    name = r.get("strategy") or f"{r['shape']:>12} {r['activation']:>8} {r['pool']:>4} {r['pattern']:>6}"
    print(f"{name} N={r['tokens']:>5}: gemm {r['gemm_s'] * 1e3:8.3f} ms  fused {r['fused_s'] * 1e3:8.3f} ms "
          f"({r['fused_over_gemm']:.3f}x, target {r['target']})  unprepared {r['unprepared_over_gemm'] or 0:.3f}x  "
          f"encode_pool {r['encode_pool_over_gemm'] or 0:.3f}x  launches {r['launches']['count']} "
          f"(triton {r['triton_launches']})", flush=True)


def worker_env(group, device) -> dict:
    env = dict(os.environ)
    if device != "cuda":               # the strategies run under the Triton interpreter on the CPU
        if group == "strategies":
            env["TRITON_INTERPRET"] = "1"
        else:
            env.pop("TRITON_INTERPRET", None)
    return env


def main():
    ap = base_parser(__doc__)
    ap.add_argument("--layout", default="auto", choices=["auto", "packed", "padded"])
    ap.add_argument("--reps", type=int, default=7, help="paired repetitions (GEMM, then each op)")
    ap.add_argument("--only", default=None, help="run only cases whose shape name contains this")
    ap.add_argument("--max-tokens", type=int, default=None, help="skip cases with more tokens than this")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds: stop starting entries after this, kill the worker at it (JSON kept)")
    ap.add_argument("--end-at", type=float, default=None,
                    help="epoch seconds: the same as --deadline, as a point in time (gpu.sh: its step's end)")
    ap.add_argument("--entry-timeout", type=float, default=150, help="seconds one entry may take in a worker")
    ap.add_argument("--no-strategies", action="store_true", help="skip the strategy comparison")
    ap.add_argument("--worker", default=None, choices=["main", "strategies"], help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = finish_args(ap.parse_args())
    if args.layout == "auto":
        args.layout = "packed" if packed_supported() else "padded"
    if args.worker:
        return worker(args)
    deadline = time.monotonic() + (args.deadline or 1e9)
    if args.end_at:
        deadline = min(deadline, time.monotonic() + args.end_at - time.time())
    todo = entries(args)
    got = Collected(args, todo)
    got.save(quiet=True)                  # a K1 file from the start: a kill at any point leaves one
    for group in ("main", "strategies"):
        argv = [sys.executable, "-m", "bench.bench_k1", *sys.argv[1:], "--layout", args.layout, "--worker", group]
        never = run_entries(lambda i: argv + ["--start", str(i)], len(todo[group]),
                            lambda i, p, g=group: got.add(g, i, p), deadline, args.entry_timeout,
                            env=worker_env(group, args.device))
        for i in never:
            got.add(group, i, dict(error="not run: K1's deadline"), save=False)
    got.save()
    print_table(got.results, [("shape", "shape", ""), ("activation", "act", ""), ("pool", "pool", ""),
                              ("pattern", "tokens", ""), ("tokens", "N", "d"), ("gemm_s", "gemm s", ".2e"),
                              ("fused_s", "fused s", ".2e"), ("fused_over_gemm", "fused/gemm", ".3f"),
                              ("unprepared_over_gemm", "unprep", ".3f"), ("encode_pool_over_gemm", "ep/gemm", ".3f"),
                              ("target", "target", ""), ("pass", "pass", "")])
    for s in got.strategies:
        print(f"strategy {s['strategy']:>14}: " + (f"{s['fused_over_gemm']:.3f}x" if "fused_over_gemm" in s else
                                                    s.get("skipped") or s.get("error")))
    print(f"layout {args.layout}; errors {len(got.errors)}")
    return 0 if got.results and not [e for e in got.errors if e["group"] == "main"] else 1


if __name__ == "__main__":
    sys.exit(main())
