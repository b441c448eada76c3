"""bench/gpu.sh's compile/smoke step: every kernel family compiled and run once at K1's shapes, each in its own child
process (all at once: one per family, over the machine's cores), checked against the float64 reference, within a
deadline.

    python3 -m bench.smoke [--device cpu] [--deadline 60] [--disabled-file F]

A family whose child raises, gives a wrong answer or crashes (a Triton C++ abort, a sticky CUDA fault) is switched
off: listed in the JSON with its error, and written to --disabled-file as the comma list that gpu.sh exports as
CORRSTEER_DISABLE_KERNELS for the later steps. One with no verdict by the deadline is recorded as such and stays on
(slow is not broken; K1's workers have their own limits). After its verdict a GPU child goes on compiling the
family's tuning candidates (the Triton cache the K1 step then finds warm) until the deadline.
Families: packed (the fused kernel; also its pre-activation kernel, TopK's two-pass path), split, tokens_n (fused_n),
topk (the one-pass kernel) and combine (fed synthetic boundary slots, so it does not depend on another family). On
the CPU the children run the Triton interpreter at tiny shapes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench.isolate import exit_reason

FAMILIES = {"packed": {"CORRSTEER_PACKED_STRATEGY": "fused"}, "split": {"CORRSTEER_PACKED_STRATEGY": "split"},
            "tokens_n": {"CORRSTEER_PACKED_STRATEGY": "fused_n"}, "topk": {"CORRSTEER_TOPK_STRATEGY": "one_pass"},
            "combine": {"CORRSTEER_COMBINE": "kernel"}}


# ---------------------------------------------------------------------------------------------------------------
# child: one family
# ---------------------------------------------------------------------------------------------------------------
def _inputs(args, topk: bool, n: int):
    import torch

    from bench.common import random_sae
    from bench.k1_cases import SHAPES, draw_lengths
    gpu = args.device == "cuda"
    shape = ("topk-default" if topk else "gemma2-2b") if gpu else ("tiny-topk" if topk else "tiny")
    d_in, d_sae, act, k = SHAPES[shape]
    g = torch.Generator().manual_seed(n)
    L = draw_lengths("ragged", n, g)
    xp = torch.randn(int(L.sum()), d_in, generator=g).to(args.torch_dtype).to(args.device)
    y = (torch.rand(L.numel(), generator=g) > 0.5).float().to(args.device)
    sae = random_sae(d_in, d_sae, act, k=k, device=args.device, dtype=args.torch_dtype, seed=n)
    return xp, L.to(args.device), y, sae


def _check_op(args, topk: bool, n: int) -> None:
    """encode_pool and the prepared stats call (max and mean) on the triton backend against the float64 reference."""
    from corrsteer_kernels import CorrStats, encode_pool, encode_pool_stats_prepared, prepare_batch
    xp, L, y, sae = _inputs(args, topk, n)
    batch = prepare_batch(L, y, n_tokens=xp.shape[0])
    for pool in ("max", "mean"):
        got = encode_pool(xp, L, sae, pool, backend="triton")
        want = encode_pool(xp, L, sae, pool, backend="reference").float()
        scale = 1e-2 if args.device == "cuda" else 1e-4
        bad = float(((got - want).abs() > scale * (1 + want.abs().max())).float().mean())
        if bad > 1e-2:
            raise AssertionError(f"{pool}-pool: {bad:.2%} of pooled values off the reference")
        s = encode_pool_stats_prepared(xp, batch, sae, CorrStats(sae.d_sae, device=xp.device), pool, backend="triton")
        ref = CorrStats(sae.d_sae, device=xp.device).update(want, y)
        err = float((s.features - ref.features).abs().max() / (1 + ref.features.abs().max()))
        if err > scale:
            raise AssertionError(f"{pool}-pool statistics off the reference's by {err:.2e} (relative)")


def _check_combine(args) -> None:
    """The combine kernel on synthetic boundary slots against the torch combine (packed_kernel's)."""
    import torch

    from corrsteer_kernels.combine_kernel import combine_launch
    from corrsteer_kernels.corr_stats import FEATURE_FIELDS
    from corrsteer_kernels.launch import MODE_POOL, MODE_STATS, Launch, Segments
    from corrsteer_kernels.packed_kernel import boundary_feature_sums, combine_boundary
    dev, d = args.device, 16384 if args.device == "cuda" else 40
    L = torch.tensor([5, 40, 3, 70, 1, 9], device=dev)         # tiles of 16 tokens: samples 1 and 3 cross edges
    segs, bm = Segments.of(L, int(L.sum())), 16
    n_m = -(-int(L.sum()) // bm)
    slot = torch.zeros(2 * n_m, dtype=torch.int32, device=dev)
    for b, (s, e) in enumerate(zip(segs.starts.tolist(), segs.ends.tolist())):
        for t in range(s // bm, (e - 1) // bm + 1):
            if s // bm != (e - 1) // bm:
                slot[2 * t + (1 if s >= t * bm else 0)] = b + 1
    g = torch.Generator(device=dev).manual_seed(0)
    bnd = torch.rand(2 * n_m, d, device=dev, generator=g)
    part = torch.rand(n_m, len(FEATURE_FIELDS), d, device=dev, dtype=torch.float64, generator=g)
    launch = Launch(None, part, bnd, slot)
    y = torch.tensor([1.0, -1.0, 2.0, 0.0, 1.0, 3.0], device=dev, dtype=torch.float64)
    for pool in ("max", "mean"):
        feats = combine_launch(launch, segs, pool, MODE_STATS, y=y,
                               features=torch.zeros(len(FEATURE_FIELDS), d, dtype=torch.float64, device=dev))
        want = part.sum(0) + boundary_feature_sums(launch, pool, L, y)
        torch.testing.assert_close(feats, want, rtol=1e-5, atol=1e-5)
        out = combine_launch(launch, segs, pool, MODE_POOL, out=torch.zeros(6, d, device=dev))
        samples, z = combine_boundary(launch, pool, L)
        torch.testing.assert_close(out[samples], z, rtol=1e-5, atol=1e-5)


def _warm(args, family: str) -> None:
    """Compile the family's tuning candidates at the K1 token counts (a GPU only; the interpreter compiles nothing)."""
    if args.device != "cuda" or family == "combine":
        return
    os.environ.pop("CORRSTEER_AUTOTUNE", None)
    for n in (2048, 8192):
        _check_op(args, family == "topk", n)
    if family == "packed":          # TopK's two-pass path: the pre-activation kernel and the token-cut variant
        os.environ["CORRSTEER_TOPK_STRATEGY"] = "two_pass"
        _check_op(args, True, 2048)


def child(args) -> int:
    fam, t0 = args.child, time.monotonic()
    os.environ.update(FAMILIES[fam])
    os.environ["CORRSTEER_AUTOTUNE"] = "0"         # the verdict: each family's default configuration
    verdict = dict(family=fam, ok=True, error=None)
    try:
        if fam == "combine":
            _check_combine(args)
        else:
            _check_op(args, fam == "topk", 2048 if args.device == "cuda" else 24)
    except Exception as e:            # noqa: BLE001  (the verdict)
        verdict.update(ok=False, error=f"{type(e).__name__}: {str(e)[:500]}")
    verdict["seconds"] = round(time.monotonic() - t0, 2)
    with open(args.verdict, "w") as f:
        json.dump(verdict, f)
    if verdict["ok"]:
        try:
            _warm(args, fam)
        except Exception as e:        # noqa: BLE001  (a tuning candidate that does not build is the tuner's business)
            print(f"smoke {fam}: warming stopped: {type(e).__name__}: {e}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------------------------
def resolved(args):
    """args with the device (cuda when available) and dtype filled in (imports torch)."""
    import torch

    from bench.common import finish_args
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return finish_args(args)


def run_children(args, folder: str, end: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if args.device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    procs = {}
    for fam in args.families.split(","):
        argv = [sys.executable, "-m", "bench.smoke", "--child", fam, "--verdict", os.path.join(folder, f"{fam}.json")]
        argv += (["--device", args.device] if args.device else []) + (["--dtype", args.dtype] if args.dtype else [])
        procs[fam] = subprocess.Popen(argv, env=env, start_new_session=True)
    while time.time() < end and any(p.poll() is None for p in procs.values()):
        time.sleep(0.2)
    out = {}
    for fam, p in procs.items():
        running = p.poll() is None
        if running:
            os.killpg(p.pid, 9)
            p.wait()
        path = os.path.join(folder, f"{fam}.json")
        if os.path.exists(path):
            out[fam] = json.load(open(path))
            out[fam]["warm"] = "stopped at the deadline" if running else exit_reason(p.returncode)
        else:
            if running:           # slow, not failed: recorded, not switched off (K1's workers have their limits)
                out[fam] = dict(family=fam, ok=None, error="no verdict by the deadline")
            else:
                out[fam] = dict(family=fam, ok=False, error=f"the child died: {exit_reason(p.returncode)}")
    return out


def parser() -> argparse.ArgumentParser:
    """Light (no torch import): the parent starts its children before anything heavy."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    ap.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"],
                    help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--quick", action="store_true", help="accepted for gpu.sh's common arguments (no effect)")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--tag", default="", help="appended to the JSON's name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deadline", type=float, default=60, help="seconds for every child together (from now)")
    ap.add_argument("--end-at", type=float, default=None,
                    help="epoch seconds by which the children stop (overrides --deadline; gpu.sh: its step's end)")
    ap.add_argument("--disabled-file", default=None, help="write the failed families here, comma-separated")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma list of the families to check (all)")
    ap.add_argument("--meta-file", default=None, help="gpu.sh's meta JSON (device, date, versions) for this JSON")
    ap.add_argument("--child", default=None, choices=list(FAMILIES), help=argparse.SUPPRESS)
    ap.add_argument("--verdict", default=None, help=argparse.SUPPRESS)
    return ap


def main() -> int:
    args = parser().parse_args()
    bad = set(args.families.split(",")) - set(FAMILIES)
    if bad:
        raise SystemExit(f"--families: unknown {sorted(bad)}; choose from {list(FAMILIES)}")
    if args.child:
        return child(resolved(args))
    t0 = time.time()
    end = args.end_at or t0 + args.deadline
    args.device = args.device or ("cuda" if shutil.which("nvidia-smi") else "cpu")   # cheap: no torch import yet
    with tempfile.TemporaryDirectory() as folder:
        fams = run_children(args, folder, end)
    off = [f for f, v in fams.items() if v["ok"] is False]
    if args.disabled_file:                   # first: what the later steps need
        with open(args.disabled_file, "w") as f:
            f.write(",".join(off))
    for f, v in fams.items():
        print(f"smoke {f:>9}: {'ok' if v['ok'] else 'FAILED: ' + v['error'] if v['ok'] is False else v['error']} "
              f"({v.get('seconds', '-')}s; warming: {v.get('warm', '-')})", flush=True)
    payload = dict(benchmark="compile/smoke of every kernel family (bench/smoke.py)", families=fams, disabled=off,
                   seconds=round(time.time() - t0, 1), deadline_s=round(end - t0, 1),
                   fault=os.environ.get("CORRSTEER_FAULT"))
    if args.meta_file and os.path.exists(args.meta_file):     # gpu.sh's meta: no torch / transformers import here
        meta = dict(json.load(open(args.meta_file)), argv=sys.argv[1:], time=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    git_commit=os.environ.get("CORRSTEER_GIT_COMMIT"))
        path = os.path.join(args.out_dir, f"smoke-{meta['device_kind']}-{meta['date']}.json")
        os.makedirs(args.out_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(dict(meta=meta, **payload), f, indent=1, default=str)
    else:
        from bench.common import write_json
        write_json("smoke", resolved(args), payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
