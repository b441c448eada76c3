"""The CPU (torch) path of encode_pool and encode_pool_stats.

Blocked: consecutive samples in groups of at most CPU_TILE_ELEMENTS * LONG_BLOCK_SCALE / CPU_TILE_N tokens (2048; a
longer sample alone; two-pass TopK without the scale), the dictionary in tiles of CPU_TILE_N features; per (group,
tile) block one GEMM writes fp32 pre-activations into a reused per-thread scratch buffer and the epilogue's passes
read it from there (2048-row GEMMs run ~10% faster than 512-row ones at d_in 576; with one token per sample the
epilogue and the sink take EPILOGUE_ROWS rows at a time, which stay in L2). The
tiles are spread over torch.get_num_threads() worker threads (one intra-op thread each); a tile's blocks run in group
order in one worker, and the sink is called from that worker (tiles are disjoint columns). Measured on a 2-core Xeon
(AVX-512): a pass that writes a bool tensor (pre > thr, torch.where, masked_fill_) costs 3-10 times one that writes
floats, so none is taken over a block:
  - max-pool, relu / jumprelu: the raw x @ W_enc is pooled per sample (index_reduce_ "amax" from -inf); bias and
    threshold are applied to the pooled [samples, tile] block. Exact: fl(m + b) is monotone in m, so
    max_t fl(p_t + b) = fl(max_t p_t + b), and an empty sample (-inf) thresholds to 0.
  - every other case: bias added in place, relu_ (relu) or the activation as a float mask (copy_ + gt_) multiplied
    in; mean-pool sums per sample by index_add_ (fp32, in token order; 3-7x faster than a GEMM by a 0/1 matrix).
  - TopK (d_sae <= TOPK_ONE_PASS_MAX): groups of whole rows (TOPK_TILE_ELEMENTS) spread over the workers, each
    token's k largest by topk_rows (pruned by chunk maxima, unsorted), pooled into [samples, d_sae] by
    scatter_reduce_ ("amax") or index_add_ (float64 sums: exact, order-independent); one token per sample is handed
    on sparse (TopKRows) and folded without the dense block. Wider TopK dictionaries take two passes:
    token_thresholds finds each token's cut first.
Statistics (fold_block): fp32 GEMMs of the pooled block minus the stats' shift (corr_stats: no cancellation) and
its activity mask against [1, y, y > 0] over at most FOLD_ROWS samples at a time, added into float64 accumulators
(counts are exact; the Triton kernels sum <= BLOCK_M samples in fp32 the same way, relative to a per-tile shift).
Deterministic for a given configuration, whatever the thread count.
"""
from __future__ import annotations

import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, NamedTuple

import torch

from .sae_weights import SAEWeights

CPU_TILE_ELEMENTS = 1 << 18      # fp32 pre-activations per block and worker (two-pass TopK; others x LONG_BLOCK_SCALE)
LONG_BLOCK_SCALE = 4             # relu / jumprelu: blocks of CPU_TILE_ELEMENTS * this (2048 tokens at 512 features)
EPILOGUE_ROWS = 256              # one token per sample: the epilogue and sink take a long block in chunks of these rows
CPU_TILE_N = 512                 # dictionary columns per block
TOPK_TILE_ELEMENTS = 1 << 20     # TopK, one pass: whole rows, about 455 tokens at 2304 features
TOPK_ONE_PASS_MAX = 1 << 17
FOLD_ROWS = 512                  # samples summed in fp32 before a float64 add

Sink = Callable[[slice, slice, "torch.Tensor | TopKRows", "torch.Tensor | None"], None]
"""sink(samples, columns, pooled fp32 [samples, columns] (or TopKRows: one token per sample under TopK), activity
mask fp32 0/1 of pooled or None)."""


_POOL: tuple[int, ThreadPoolExecutor] | None = None   # (pid, pool)
_INDEX_REDUCE_WARNED = False
_SCRATCH: dict = {}             # (device, thread) -> a reused fp32 buffer (a fresh one page-faults on every call)


def scratch(n: int, device) -> torch.Tensor:
    """A flat fp32 buffer of n elements, reused across calls on the same device by the same thread (grown when too
    small). Callers use it only within one call and never hand it out."""
    key = (str(device), threading.get_ident())
    buf = _SCRATCH.get(key)
    if buf is None or buf.numel() < n:
        _SCRATCH[key] = buf = torch.empty(n, dtype=torch.float32, device=device)
    return buf[:n]


def sample_groups(lengths: list[int], max_tokens: int) -> list[tuple[int, int, int, int]]:
    """Consecutive samples in groups of at most max_tokens tokens (a longer sample alone):
    [(first sample, end sample, first token, end token)]."""
    groups, b0, t0, t = [], 0, 0, 0
    for b, n in enumerate(lengths):
        if t + n - t0 > max_tokens and b > b0:
            groups.append((b0, b, t0, t))
            b0, t0 = b, t
        t += n
    if b0 < len(lengths):
        groups.append((b0, len(lengths), t0, t))
    return groups


def active_mask(z: torch.Tensor, thr: torch.Tensor | float, out: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 1.0 where z > thr, else 0.0, written straight into a float tensor (no bool tensor; one pass, 25% faster
    than copy_ then gt_)."""
    out = torch.empty_like(z) if out is None else out
    return torch.gt(z, thr, out=out)


def score_rows(y: torch.Tensor) -> torch.Tensor:
    """fp32 [3, b]: the rows [1, y, y > 0] that fold_block multiplies pooled blocks by (built once per batch)."""
    return torch.stack([torch.ones_like(y, dtype=torch.float32), y.float(), (y > 0).float()])


def fold_block(z: torch.Tensor, mask: torch.Tensor | None, y: torch.Tensor, shift: torch.Tensor,
               w: torch.Tensor | None = None) -> torch.Tensor:
    """float64 [len(FEATURE_FIELDS), F]: the feature sums of pooled activations z [b, F] (fp32, >= 0) against
    scores y [b] (float64), the first three relative to shift [F] (fp32-representable); mask = the fp32 0/1 activity
    of z (computed when None); w = score_rows(y) if the caller has it. fp32 GEMMs of z - shift (well conditioned:
    no cancellation of large raw sums) and a dot product for sum_dz2, over at most FOLD_ROWS samples at a time,
    accumulated in float64; sum_z_pos = sum over y > 0 of (z - shift), plus n_pos shift in float64.
    sum_z_active_pos = sum_z_pos as z >= 0."""
    if mask is None:
        mask = active_mask(z, 0.0)
    w = score_rows(y) if w is None else w
    c32 = shift.float()
    parts = []
    for r in range(0, max(1, z.shape[0]), FOLD_ROWS):     # one empty block for 0 samples
        dz, wb = z[r:r + FOLD_ROWS] - c32, w[:, r:r + FOLD_ROWS]
        lin = wb @ dz                                   # sum_dz, sum_dzy, sum over y > 0 of dz
        cnt = wb[0::2] @ mask[r:r + FOLD_ROWS]          # n_active, n_active_pos
        part = torch.stack([lin[0], torch.linalg.vecdot(dz, dz, dim=0), lin[1], lin[2], cnt[0], cnt[1]]).double()
        zp = part[3] + wb[2].double().sum() * shift.double()
        parts.append(torch.cat([part[:3], zp[None], part[4:], zp[None]]))
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)


def topk_rows(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) [n, k] of each row's k largest entries of pre [n, d] (unsorted), as torch.topk(pre, k,
    sorted=False) gives them (the same values; among equal values another index may be picked). Pruned: the row is
    cut into G = d // h interleaved chunks of h columns (chunk c = columns c, c + G, ...); every one of the k largest
    values lies in one of the k chunks with the largest maxima (those hold k values >= the k-th largest chunk max),
    so the exact top-k runs over those k * h candidates (plus the d - G h tail columns): two small torch.topk calls
    and one vectorised max instead of one topk over all d columns (4x faster at 2304 columns, k = 32)."""
    n, d = pre.shape
    h = max(1, round(math.sqrt(d / max(k, 1))))
    G = d // h
    if h < 2 or G <= 2 * k:
        return torch.topk(pre, k, dim=1, sorted=False)
    cmax = pre[:, :G * h].unflatten(1, (h, G)).amax(1)                                # [n, G]
    top_c = torch.topk(cmax, k, dim=1, sorted=False).indices                           # [n, k]
    idx = (top_c[:, :, None] + G * torch.arange(h, device=pre.device)).flatten(1)      # [n, k h]
    if G * h < d:
        idx = torch.cat([idx, torch.arange(G * h, d, device=pre.device).expand(n, -1)], dim=1)
    vals, pick = torch.topk(pre.gather(1, idx), k, dim=1, sorted=False)
    return vals, idx.gather(1, pick)


class TopKRows(NamedTuple):
    """One token per sample under TopK: sample b's pooled activations are `values[b]` (>= 0) at columns
    `indices[b]` (distinct within a row) and 0 elsewhere; sinks take it instead of the dense [b, d_sae] block."""
    values: torch.Tensor     # fp32 [b, k]
    indices: torch.Tensor    # int64 [b, k]

    def dense(self, d_sae: int) -> torch.Tensor:
        out = torch.zeros((self.values.shape[0], d_sae), dtype=torch.float32, device=self.values.device)
        return out.scatter_(1, self.indices, self.values)


def fold_topk_rows(rows: TopKRows, y: torch.Tensor, d_sae: int, shift: torch.Tensor) -> torch.Tensor:
    """fold_block of rows.dense(d_sae) against y [b] (float64), relative to shift [d_sae], without the dense block:
    each sample's k entries (z - shift) added in float64 (index_add_ in a fixed order: deterministic), then the
    b - (entries of the feature) implicit zeros' -shift terms, in float64."""
    c = shift.double()
    z = rows.values.double()
    dz = z - c[rows.indices]
    act = (rows.values > 0).double()
    yk, pos = y.double()[:, None].expand_as(z), (y > 0).double()[:, None].expand_as(z)
    src = torch.stack([dz, dz * dz, dz * yk, z * pos, act, act * pos, z * pos, torch.ones_like(z), yk]).flatten(1)
    out = torch.zeros((src.shape[0], d_sae), dtype=torch.float64, device=z.device)
    out.index_add_(1, rows.indices.flatten(), src)
    zeros, y_zeros = z.shape[0] - out[7], y.double().sum() - out[8]      # implicit 0 entries and their sum of y
    return torch.cat([torch.stack([out[0] - zeros * c, out[1] + zeros * c * c, out[2] - y_zeros * c]), out[3:7]])


def topk_mean(rows: TopKRows, d_sae: int) -> torch.Tensor:
    """float64 [d_sae]: the mean of rows.dense(d_sae) over its rows (a shift proposal)."""
    out = torch.zeros(d_sae, dtype=torch.float64, device=rows.values.device)
    out.index_add_(0, rows.indices.flatten(), rows.values.double().flatten())
    return out / max(rows.values.shape[0], 1)


def topk_pool(pre: torch.Tensor, lengths: list[int], k: int, pool: str) -> torch.Tensor | TopKRows:
    """Pooled TopK activations of one group's pre-activations [n, d_sae] fp32 (bias added): [len(lengths), d_sae]
    fp32, or TopKRows when every sample has one token."""
    n, d_sae = pre.shape
    if n and all(m == 1 for m in lengths):
        vals, ind = topk_rows(pre, min(k, d_sae))
        return TopKRows(vals.clamp_(min=0), ind)
    out = torch.zeros((len(lengths), d_sae), dtype=torch.float32 if pool == "max" else torch.float64,
                      device=pre.device)
    if n == 0:
        return out.float()
    vals, ind = topk_rows(pre, min(k, d_sae))
    vals = vals.clamp(min=0)
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=pre.device),
                                  torch.tensor(lengths, device=pre.device), output_size=n)
    flat = (seg[:, None] * d_sae + ind).flatten()
    if pool == "max":
        out.view(-1).scatter_reduce_(0, flat, vals.flatten(), "amax")
        return out
    out.view(-1).index_add_(0, flat, vals.flatten().double())    # fp64: exact, so the add order is irrelevant
    return (out / torch.tensor(lengths, device=pre.device).clamp(min=1).double()[:, None]).float()


def token_thresholds(xp: torch.Tensor, sae: SAEWeights) -> torch.Tensor:
    """fp32 [N]: for packed tokens xp [N, d_in], a value between the k-th and (k+1)-th largest pre-activation
    (the first pass of two, for TopK dictionaries wider than TOPK_ONE_PASS_MAX)."""
    N, k, d_sae = xp.shape[0], sae.k, sae.d_sae
    if k >= d_sae:
        return torch.full((N,), float("-inf"), device=xp.device)
    W, b_eff = sae.W_enc, sae.effective_bias()
    tile = min(d_sae, CPU_TILE_N)
    out = torch.empty(N, dtype=torch.float32, device=xp.device)
    step = max(1, CPU_TILE_ELEMENTS // tile)
    for s in range(0, N, step):
        xc, best = xp[s:s + step].float(), None
        for j in range(0, d_sae, tile):
            pre = torch.addmm(b_eff[j:j + tile], xc, W[:, j:j + tile].float())
            cand = pre if best is None else torch.cat([best, pre], dim=1)
            best = torch.topk(cand, min(k + 1, cand.shape[1]), dim=1).values
        out[s:s + step] = 0.5 * (best[:, k - 1] + best[:, k])
    return out


def one_pass_topk(sae: SAEWeights) -> bool:
    return sae.activation == "topk" and sae.d_sae <= TOPK_ONE_PASS_MAX


class Group(NamedTuple):
    """One group of consecutive samples and what its blocks share across tiles and layers (tokens from lengths)."""
    rows: slice                     # its samples b0:b1
    tokens: slice                   # its packed tokens t0:t1
    seg: torch.Tensor | None        # [n] int64 sample (within the group) of each token; None: one token per sample
    lens: torch.Tensor              # [samples] fp32, at least 1 (mean-pool divisor)


def make_group(lengths, lens, b0, b1, t0, t1) -> Group:
    seg = None
    if not all(n == 1 for n in lens[b0:b1]):
        seg = torch.repeat_interleave(torch.arange(b1 - b0, device=lengths.device), lengths[b0:b1], output_size=t1 - t0)
    return Group(slice(b0, b1), slice(t0, t1), seg, lengths[b0:b1].clamp(min=1).float())


def host_lengths(lengths: torch.Tensor, cache: dict) -> list[int]:
    """The batch's lengths as a host list, kept in cache."""
    if "host_lengths" not in cache:
        cache["host_lengths"] = lengths.tolist()
    return cache["host_lengths"]


def cached_groups(lengths: torch.Tensor, max_tokens: int, cache: dict) -> list[Group]:
    """The groups of at most max_tokens tokens of a batch, kept in cache (a PreparedBatch's: every layer and pool of
    the batch reads them) under ("groups", max_tokens)."""
    key = ("groups", max_tokens)
    if key not in cache:
        lens = host_lengths(lengths, cache)
        cache[key] = [make_group(lengths, lens, *bt) for bt in sample_groups(lens, max_tokens)]
    return cache[key]


def _pool_block(pre, g: Group, pool, b_eff, thr_f, thr_t, relu):
    """(pooled [samples, tile] fp32, its activity mask or None) of one block of raw pre-activations x @ W [n, tile]
    (modified in place). thr_t: the tokens' TopK cuts (two-pass TopK) or None; relu: the activation is max(pre, 0)."""
    if pool == "max" and thr_t is None and g.seg is not None:            # pool, then bias and threshold
        m = torch.full((g.lens.shape[0], pre.shape[1]), float("-inf"), device=pre.device)
        m.index_reduce_(0, g.seg, pre, "amax")
        m += b_eff
        mask = active_mask(m, thr_f)
        return m.nan_to_num_(0.0, 0.0, 0.0).mul_(mask), mask   # -inf (empty sample) * 0 would be nan
    pre += b_eff
    mask = None
    if relu:
        pre.relu_()
    else:
        mask = active_mask(pre, thr_f)
        if thr_t is not None:
            mask.mul_(torch.ge(pre, thr_t[:, None], out=torch.empty_like(pre)))
        pre.mul_(mask)              # dropped entries become +-0.0 (writers add 0.0: -0.0 + 0.0 = +0.0)
    if g.seg is None:
        return pre, mask
    m = torch.zeros((g.lens.shape[0], pre.shape[1]), device=pre.device)
    if pool == "max":               # two-pass TopK: the activations are >= 0, so a max from 0 is the max
        return m.index_reduce_(0, g.seg, pre, "amax"), None
    return m.index_add_(0, g.seg, pre).div_(g.lens[:, None]), None    # 3-7x faster than a GEMM by a 0/1 matrix


def block_parts(g: Group, pre: torch.Tensor, thr_t: torch.Tensor | None) -> list:
    """[(samples, their pre-activation rows, their TopK cuts or None)] of a block: the whole block, or, with one token
    per sample, chunks of EPILOGUE_ROWS rows (the epilogue's several passes and the fold then stay in L2: ~10% off
    a 2048-row block at d_in 576)."""
    if g.seg is not None:
        return [(g.rows, pre, thr_t)]
    b0, n, c = g.rows.start, pre.shape[0], EPILOGUE_ROWS
    return [(slice(b0 + r, b0 + min(n, r + c)), pre[r:r + c], None if thr_t is None else thr_t[r:r + c])
            for r in range(0, n, c)]


def silence_index_reduce_warning() -> None:
    """torch calls index_reduce_ "beta" once per process; users need not see it. Taken here, in the calling thread,
    before any worker starts (warnings.catch_warnings is not thread-safe)."""
    global _INDEX_REDUCE_WARNED
    if not _INDEX_REDUCE_WARNED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            torch.zeros(1).index_reduce_(0, torch.zeros(1, dtype=torch.long), torch.ones(1), "amax")
        _INDEX_REDUCE_WARNED = True


@contextmanager
def one_thread():
    """Run the enclosed torch ops on one intra-op thread (this thread's setting, restored on exit)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def in_workers(job: Callable[[int, torch.Tensor], object], n_jobs: int, scratch_elements: int, device) -> list:
    """[job(0, buf), ..., job(n_jobs - 1, buf)] over min(torch.get_num_threads(), n_jobs) worker threads, each with
    one intra-op thread (torch's thread count is per thread: the caller's is untouched) and its own scratch buffer
    buf of scratch_elements fp32. Jobs are taken in order from a shared counter as workers come free (a worker
    slowed by another process's load does not hold the others back); a job's result does not depend on which
    worker ran it. One worker runs inline. Exceptions propagate."""
    n_workers = max(1, min(torch.get_num_threads(), n_jobs))
    out: list = [None] * n_jobs
    if n_workers == 1:
        buf = scratch(scratch_elements, device)
        for i in range(n_jobs):
            out[i] = job(i, buf)
        return out
    taken, lock = iter(range(n_jobs)), threading.Lock()

    def run():
        torch.set_num_threads(1)
        buf = scratch(scratch_elements, device)
        while True:
            with lock:
                i = next(taken, None)
            if i is None:
                return
            out[i] = job(i, buf)
    for f in [worker_pool(n_workers).submit(run) for _ in range(n_workers)]:
        f.result()
    return out


def worker_pool(n_workers: int) -> ThreadPoolExecutor:
    """The process's worker threads (a new pool after a fork: the parent's threads do not exist in the child)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers < n_workers:
        _POOL = (os.getpid(), ThreadPoolExecutor(n_workers, thread_name_prefix="corrsteer-cpu"))
    return _POOL[1]


def _topk_blocks(xp, lens, sae, pool, sink):
    """TopK, one pass: token groups of whole rows spread over the workers; the sink sees them in group order."""
    b_eff, W = sae.effective_bias(), sae.W_enc.float()
    groups = sample_groups(lens, max(1, TOPK_TILE_ELEMENTS // sae.d_sae))
    rows = max((t1 - t0 for _, _, t0, t1 in groups), default=0)

    def job(i, buf):
        b0, b1, t0, t1 = groups[i]
        pre = torch.mm(xp[t0:t1].float(), W, out=buf[:(t1 - t0) * sae.d_sae].view(t1 - t0, sae.d_sae))
        return topk_pool(pre.add_(b_eff), lens[b0:b1], sae.k, pool)
    done = in_workers(job, len(groups), rows * sae.d_sae, xp.device)
    with one_thread():              # small ops: on a loaded machine an OpenMP team's barriers cost milliseconds
        for (b0, b1, _, _), pooled in zip(groups, done):
            sink(slice(b0, b1), slice(0, sae.d_sae), pooled, None)


def pooled_blocks_torch(xp: torch.Tensor, lengths: torch.Tensor, sae: SAEWeights, pool: str, sink: Sink,
                        cache: dict | None = None) -> None:
    """Hand every (sample group, dictionary tile) block of pooled activations to sink. Blocks of at most
    CPU_TILE_ELEMENTS pre-activations (L2-sized), the dictionary's tiles spread over torch.get_num_threads() workers
    (each tile's blocks in group order in one worker: sinks run in the workers, on disjoint columns). cache: where
    the batch's host lengths and groups are kept across calls (a PreparedBatch's), else built for this call."""
    cache = {} if cache is None else cache
    if one_pass_topk(sae):
        return _topk_blocks(xp, host_lengths(lengths, cache), sae, pool, sink)
    silence_index_reduce_warning()
    b_eff, thr_f, W = sae.effective_bias(), sae.feature_threshold(), sae.W_enc.float()
    thr_t = token_thresholds(xp, sae) if sae.activation == "topk" else None
    tile_n = min(sae.d_sae, CPU_TILE_N)
    with one_thread():
        elements = CPU_TILE_ELEMENTS * (LONG_BLOCK_SCALE if thr_t is None else 1)
        groups = cached_groups(lengths, max(1, elements // tile_n), cache)
    xs = [xp[g.tokens].float() for g in groups]
    tts = [None if thr_t is None else thr_t[g.tokens] for g in groups]
    rows = max((x.shape[0] for x in xs), default=0)
    tiles = [slice(j, min(sae.d_sae, j + tile_n)) for j in range(0, sae.d_sae, tile_n)]
    relu = sae.activation == "relu"

    def job(i, buf):                # one dictionary tile, its blocks in group order
        cols = tiles[i]
        Wj, bj, tj = W[:, cols], b_eff[cols], thr_f[cols]
        for g, x, tt in zip(groups, xs, tts):
            pre = torch.mm(x, Wj, out=buf[:x.shape[0] * Wj.shape[1]].view(x.shape[0], Wj.shape[1]))
            for rows, part, part_t in block_parts(g, pre, tt):
                pooled, mask = _pool_block(part, g, pool, bj, tj, part_t, relu)
                sink(rows, cols, pooled, mask)
    in_workers(job, len(tiles), rows * tile_n, xp.device)
