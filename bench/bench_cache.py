"""The fused op against cache-then-correlate (issue 45): the same selection three ways on the same token stream.

Per case (an SAE shape, N samples of ragged lengths, max-pool), each method sees the same packed token batches
(drawn from a seeded generator per batch, outside the timed region) and ends with Pearson r of every feature against
the samples' scores y:

- ``fused``: ours, as collection calls it: ``prepare_batch`` once per batch, ``encode_pool_stats_prepared`` into a
  ``CorrStats``, ``pearson()`` at the end. Nothing of size [samples, d_sae] or [tokens, d_sae] is kept.
- ``dense``: what sae-lens users do: the real ``sae_lens`` SAE class (same weights) ``.encode`` per batch -> per-sample
  max -> rows of a dense pooled matrix [N, d_sae] (fp32) -> float64 Pearson per feature against y (column chunks of
  1024 features: the frugal way; ``torch.corrcoef`` of the whole matrix would also build a [d_sae, d_sae] result).
- ``sparse-cache``: delphi-style (delphi's ``LatentCache`` keeps ``locations`` [nnz, 3] = (sample, token, latent) and
  ``activations`` [nnz] per module and saves them with safetensors): the same encode per batch, the non-zero latents of
  every token written to disk (int32 locations, fp32 activations), then read back, max-pooled per (sample, latent) by
  scatter and reduced to float64 Pearson sums over the non-zeros (absent entries count as 0).

Recorded per case and method: wall seconds of the method's work (input drawing excluded), peak RSS of a separate child
process above its RSS after setup (inputs and SAE built), bytes written to disk, and the top features against the
float64 reference (``backend="reference"``, where N * d_in * d_sae is small enough; elsewhere against ``fused``).
A planted feature (its pre-activation raised by ``--signal`` on the tokens of samples with y = 1) makes the top
feature unambiguous; the other top-10 features are random-level correlations.

    OMP_NUM_THREADS=2 python -m bench.bench_cache                 # the sweep in CASES, ~15-25 min on 2 cores
    python -m bench.bench_cache --quick                           # tiny sizes, seconds
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import torch

from bench.common import base_parser, finish_args, random_sae, write_json
from corrsteer_kernels import CorrStats, encode_pool_stats_prepared, prepare_batch

SHAPES = {  # name: (d_in, d_sae, activation, k)
    "gemma-2-2b-16k": (2304, 16384, "jumprelu", None),
    "llama-3.1-8b-32k": (4096, 32768, "jumprelu", None),
    "default-topk-2304": (576, 2304, "topk", 32),
}
CASES = [("default-topk-2304", 1000), ("default-topk-2304", 10000), ("default-topk-2304", 100000),
         ("gemma-2-2b-16k", 1000), ("gemma-2-2b-16k", 10000), ("llama-3.1-8b-32k", 1000)]
QUICK = [("default-topk-2304", 64), ("gemma-2-2b-16k", 48)]
METHODS = ("fused", "dense", "sparse-cache")
TOP = 10
REFERENCE_WORK = 1000 * 576 * 2304   # the float64 reference runs where N * d_in * d_sae is at most this (slow)
PLANTED = 7          # the feature whose pre-activation the signal raises


# ---------------------------------------------------------------------------------------------------------------
# the shared input stream
# ---------------------------------------------------------------------------------------------------------------
def make_sae(shape: str, seed: int):
    d_in, d_sae, act, k = SHAPES[shape]
    return random_sae(d_in, d_sae, act, k=k, seed=seed)


def batches(sae, n: int, max_len: int, tokens_per_batch: int, signal: float, seed: int):
    """Yield (x [T, d_in] fp32, lengths [B], y [B]) for n samples, ragged lengths 1..max_len, deterministic."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (n,), generator=g)
    y = (torch.rand(n, generator=g) < 0.5).double()
    w = sae.W_enc[:, PLANTED].float()
    push = w / w.dot(w)                       # x += signal * push raises pre[PLANTED] by exactly `signal`
    start = 0
    while start < n:
        stop, tok = start, 0
        while stop < n and (tok == 0 or tok + int(lengths[stop]) <= tokens_per_batch):
            tok += int(lengths[stop])
            stop += 1
        gb = torch.Generator().manual_seed(seed * 1_000_003 + start)
        x = torch.randn(tok, sae.d_in, generator=gb)
        L, yb = lengths[start:stop], y[start:stop]
        x += (signal * yb.float()).repeat_interleave(L)[:, None] * push
        yield x, L, yb
        start = stop


# ---------------------------------------------------------------------------------------------------------------
# the three methods: each returns r [d_sae] float64 and the bytes it wrote
# ---------------------------------------------------------------------------------------------------------------
def run_fused(sae, stream, backend="torch"):
    stats = CorrStats(sae.d_sae)
    clock = 0.0
    for x, L, y in stream:
        t = time.perf_counter()
        encode_pool_stats_prepared(x, prepare_batch(L, y, n_tokens=x.shape[0]), sae, stats, pool="max",
                                   backend=backend)
        clock += time.perf_counter() - t
    t = time.perf_counter()
    r = stats.pearson()
    return r, 0, clock + time.perf_counter() - t


def sae_lens_sae(sae):
    """The real sae-lens class with our random weights (the way a sae-lens user's SAE encodes)."""
    import sae_lens
    if sae.activation == "topk":
        s = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=sae.d_in, d_sae=sae.d_sae, k=sae.k))
    else:
        s = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=sae.d_in, d_sae=sae.d_sae))
    with torch.no_grad():
        s.W_enc.copy_(sae.W_enc)
        s.b_enc.copy_(sae.b_enc)
        s.b_dec.copy_(sae.b_dec)
        if sae.activation == "jumprelu":
            s.threshold.copy_(sae.threshold)
    return s.eval()


def max_per_sample(acts, L):
    """[T, d_sae] -> [B, d_sae]: each sample's max over its tokens (every length >= 1 here)."""
    seg = torch.repeat_interleave(torch.arange(L.shape[0]), L)
    out = torch.full((L.shape[0], acts.shape[1]), float("-inf"))
    return out.scatter_reduce_(0, seg[:, None].expand_as(acts), acts, "amax")


def pearson_dense(A, y, chunk=1024):
    """float64 Pearson of every column of A [N, d] against y [N], column chunks (no [N, d] float64 copy)."""
    yc = y.double() - y.double().mean()
    out = torch.empty(A.shape[1], dtype=torch.float64)
    for j in range(0, A.shape[1], chunk):
        a = A[:, j:j + chunk].double()
        a -= a.mean(0)
        den = (a.square().sum(0) * yc.square().sum()).sqrt()
        out[j:j + chunk] = torch.where(den > 0, (a * yc[:, None]).sum(0) / den, torch.zeros_like(den))
    return out


def run_dense(sae, stream, n, s):
    A, Y, row, clock = None, torch.empty(n, dtype=torch.float64), 0, 0.0
    with torch.no_grad():
        for x, L, y in stream:
            t = time.perf_counter()
            if A is None:
                A = torch.empty(n, sae.d_sae)
            pooled = max_per_sample(s.encode(x), L)
            A[row:row + L.shape[0]] = pooled
            Y[row:row + L.shape[0]] = y
            row += L.shape[0]
            clock += time.perf_counter() - t
    t = time.perf_counter()
    r = pearson_dense(A, Y)
    return r, 0, clock + time.perf_counter() - t


def run_sparse_cache(sae, stream, folder, s):
    from safetensors.torch import load_file, save_file
    files, ys, first, written, clock = [], [], 0, 0, 0.0
    with torch.no_grad():
        for i, (x, L, y) in enumerate(stream):
            t = time.perf_counter()
            acts = s.encode(x)
            tok, lat = acts.nonzero(as_tuple=True)
            sample = torch.repeat_interleave(torch.arange(L.shape[0]), L)[tok] + first
            locs = torch.stack([sample, tok, lat], 1).to(torch.int32)
            path = os.path.join(folder, f"split{i}.safetensors")
            save_file({"locations": locs, "activations": acts[tok, lat].contiguous()}, path)
            written += os.path.getsize(path)
            files.append(path)
            ys.append(y)
            first += L.shape[0]
            clock += time.perf_counter() - t
    t = time.perf_counter()
    y = torch.cat(ys)
    n, d = y.shape[0], sae.d_sae
    sx, sxx, sxy = (torch.zeros(d, dtype=torch.float64) for _ in range(3))
    for path in files:                       # samples never cross a split: pool and reduce split by split
        f = load_file(path)
        locs, vals = f["locations"].long(), f["activations"]
        key = locs[:, 0] * d + locs[:, 2]
        uniq, inv = torch.unique(key, return_inverse=True)
        pooled = torch.full((uniq.shape[0],), float("-inf")).scatter_reduce_(0, inv, vals, "amax").double()
        lat, smp = uniq % d, uniq // d
        sx.index_add_(0, lat, pooled)
        sxx.index_add_(0, lat, pooled.square())
        sxy.index_add_(0, lat, pooled * y[smp])
    sy, syy = y.sum(), y.square().sum()
    cov, vx, vy = sxy - sx * sy / n, sxx - sx.square() / n, syy - sy * sy / n
    den = (vx * vy).clamp_min(0).sqrt()
    r = torch.where(den > 0, cov / den, torch.zeros_like(den))
    return r, written, clock + time.perf_counter() - t


def run_reference(sae, stream):
    return run_fused(sae, stream, backend="reference")


# ---------------------------------------------------------------------------------------------------------------
# one measurement per child process (peak RSS of that method alone)
# ---------------------------------------------------------------------------------------------------------------
def rss_mb(field="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak():
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs), so the peak counts the method alone."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def child(a) -> dict:
    torch.manual_seed(a.seed)
    sae = make_sae(a.shape, a.seed)
    stream = batches(sae, a.n, a.max_len, a.tokens_per_batch, a.signal, a.seed)
    s = sae_lens_sae(sae) if a.method in ("dense", "sparse-cache") else None     # setup, like loading the SAE
    reset_peak()
    base = rss_mb()
    folder = tempfile.mkdtemp(prefix="corrsteer-cache-bench-", dir=a.tmp)
    try:
        if a.method == "fused":
            r, written, secs = run_fused(sae, stream)
        elif a.method == "dense":
            r, written, secs = run_dense(sae, stream, a.n, s)
        elif a.method == "sparse-cache":
            r, written, secs = run_sparse_cache(sae, stream, folder, s)
        else:
            r, written, secs = run_reference(sae, stream)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    top = torch.argsort(r, descending=True)[:TOP]
    return dict(method=a.method, seconds=secs, rss_setup_mb=base, rss_peak_mb=rss_mb("VmHWM"),
                peak_above_setup_mb=rss_mb("VmHWM") - base, bytes_written=written, top=top.tolist(),
                r_top=r[top].tolist(), r=r.tolist() if a.keep_r else None)


def measure(args, shape, n, method) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_cache", "--child", method, "--shape", shape, "--n", str(n),
           "--max-len", str(args.max_len), "--tokens-per-batch", str(args.tokens_per_batch),
           "--signal", str(args.signal), "--seed", str(args.seed), "--tmp", args.tmp, "--keep-r"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return dict(method=method, error=(p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1])
    return json.loads(p.stdout.strip().splitlines()[-1])


def compare(res: dict) -> dict:
    """Top-feature agreement and max |r - r_ref| of each method against the reference (else against fused)."""
    ref_name = "reference" if "reference" in res else "fused"
    ref = torch.tensor(res[ref_name]["r"], dtype=torch.float64)
    out = {}
    for m, v in res.items():
        if m == ref_name or "r" not in v:
            continue
        r = torch.tensor(v["r"], dtype=torch.float64)
        out[m] = dict(against=ref_name, same_top1=v["top"][0] == res[ref_name]["top"][0],
                      top10_overlap=len(set(v["top"]) & set(res[ref_name]["top"])),
                      max_abs_r_diff=float((r - ref).abs().max()))
    return out


def run_case(args, shape, n, with_reference) -> dict:
    methods = list(METHODS) + (["reference"] if with_reference else [])
    res = {}
    for m in methods:
        res[m] = measure(args, shape, n, m)
        v = res[m]
        print(f"{shape:>18} N={n:>6} {m:>12}: " + (v["error"] if "error" in v else
              f"{v['seconds']:8.2f} s  peak +{v['peak_above_setup_mb']:8.1f} MB  "
              f"wrote {v['bytes_written'] / 2**20:8.1f} MiB  top1 {v['top'][0]}"), flush=True)
    agree = compare({k: v for k, v in res.items() if "error" not in v}) if "fused" in res else {}
    f = res.get("fused", {})
    ratios = {m: dict(time=v["seconds"] / f["seconds"], peak_memory=v["peak_above_setup_mb"] /
                      max(f["peak_above_setup_mb"], 1.0))
              for m, v in res.items() if m in ("dense", "sparse-cache") and "error" not in v and "seconds" in f}
    for v in res.values():
        v.pop("r", None)
    d_in, d_sae, act, k = SHAPES[shape]
    return dict(shape=shape, d_in=d_in, d_sae=d_sae, activation=act, k=k, n_samples=n, max_len=args.max_len,
                methods=res, agreement=agree, ratios_vs_fused=ratios)


def main():
    ap = base_parser(__doc__)
    ap.add_argument("--child", default=None, help=argparse_hidden())
    ap.add_argument("--shape", default=None, choices=list(SHAPES))
    ap.add_argument("--n", type=int, default=None, help="one case: N samples of --shape (else the CASES sweep)")
    ap.add_argument("--max-len", type=int, default=8, help="tokens per sample drawn uniformly from 1..max-len")
    ap.add_argument("--tokens-per-batch", type=int, default=2048, help="tokens per batch (collection's size)")
    ap.add_argument("--signal", type=float, default=3.0, help="planted feature's pre-activation shift for y = 1")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where the sparse cache is written")
    ap.add_argument("--keep-r", action="store_true", help=argparse_hidden())
    args = ap.parse_args()
    if args.child:
        args.method = args.child
        print(json.dumps(child(args)))
        return
    finish_args(args)
    if args.device != "cpu":
        raise SystemExit("bench_cache runs on the CPU (the GPU sweep is not built yet)")
    cases = [(args.shape, args.n)] if args.shape and args.n else (QUICK if args.quick else CASES)
    results = [run_case(args, shape, n, with_reference=n * SHAPES[shape][0] * SHAPES[shape][1] <= REFERENCE_WORK)
               for shape, n in cases]
    write_json("cache", args, dict(
        what="seconds / peak RSS above setup / bytes written of fused encode_pool_stats_prepared vs sae-lens encode "
             "+ dense pooled matrix + float64 Pearson vs a delphi-style sparse latent cache on disk; max-pool",
        threads=torch.get_num_threads(), cases=results))


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
