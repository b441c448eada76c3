"""encode_pool: SAE-encode every token of each sample and max/mean-pool the activations per sample.

    encode_pool(x, lengths, sae, pool="max", backend="auto", out=None) -> Tensor[B, d_sae] (fp32)

x is either padded, [B, T, d_in] with lengths [B] in [0, T] (sample b's tokens are x[b, :lengths[b]]), or packed,
[N, d_in] with lengths [B] summing to N (sample b's tokens are the next lengths[b] rows) — fp32/fp16/bf16.
Activations are >= 0, so max-pool starts from 0; a length-0 sample pools to 0 under both pools; mean-pool divides
the sum by lengths[b]. The activation matrix of all tokens [N, d_sae] is never built:
  - torch path (CPU): consecutive samples in groups of a few thousand tokens, the dictionary in tiles; segments are
    pooled with torch.segment_reduce over each group's contiguous rows. Max-pool with a per-feature threshold (relu,
    jumprelu) pools the raw pre-activations and thresholds once per sample: max_t act_t = m if m > thr else 0.
  - triton path: the packed-token kernel (packed_kernel.py), tiles of tokens spanning samples.
  - TopK, torch path (d_sae <= TOPK_ONE_PASS_MAX): one GEMM pass per group of samples over the whole dictionary
    width; each token's k largest pre-activations (torch.topk: values and indices) are pooled by scatter. Wider
    TopK dictionaries, and every TopK dictionary on the triton path, take two passes: a first finds each token's
    cut (the midpoint between its k-th and (k+1)-th pre-activation; `token_thresholds`, `token_thresholds_triton`),
    then the pooling pass keeps what lies at or above it.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._common import (check_finite, check_float, check_lengths, check_pool, resolve_backend)
from .packed_kernel import MODE_POOL, MODE_PRE, Segments, combine_boundary, packed_encode
from .sae_weights import SAEWeights

CPU_TILE_ELEMENTS = 1 << 22      # torch path: fp32 pre-activations alive at once
CPU_TILE_N = 2048
GPU_TOPK_ELEMENTS = 1 << 26      # triton path, TopK cuts: one chunk's pre-activations [tokens, d_sae]
TOPK_ONE_PASS_MAX = 1 << 17


# ----------------------------------------------------------------------------------------------------------
# Reference (the spec): float64, materialises everything.
# ----------------------------------------------------------------------------------------------------------
def activation_reference(pre: torch.Tensor, sae: SAEWeights) -> torch.Tensor:
    """sae-lens activation of float64 pre-activations [..., d_sae]."""
    if sae.activation == "relu":
        return pre.clamp(min=0)
    if sae.activation == "jumprelu":
        return pre.clamp(min=0) * (pre > sae.threshold.to(pre))
    k = min(sae.k, pre.shape[-1])
    top = torch.topk(pre, k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, top.indices, top.values.clamp(min=0))


def encode_reference(x: torch.Tensor, sae: SAEWeights) -> torch.Tensor:
    """float64 activations [..., d_sae] of x [..., d_in]."""
    x64 = x.double()
    if sae.b_dec is not None:
        x64 = x64 - sae.b_dec.double()
    return activation_reference(x64 @ sae.W_enc.double() + sae.b_enc.double(), sae)


def encode_pool_reference(x: torch.Tensor, lengths: torch.Tensor, sae: SAEWeights, pool: str = "max") -> torch.Tensor:
    """float64 [B, d_sae]: the spec of encode_pool (x padded [B, T, d_in] or packed [N, d_in])."""
    lengths = torch.as_tensor(lengths).long().to(x.device)
    if x.dim() == 2:
        acts = encode_reference(x, sae)
        out = acts.new_zeros(lengths.shape[0], sae.d_sae)
        for b, (s, n) in enumerate(zip((torch.cumsum(lengths, 0) - lengths).tolist(), lengths.tolist())):
            if n:
                seg = acts[s:s + n]
                out[b] = seg.amax(0) if pool == "max" else seg.sum(0) / n
        return out
    B, T, _ = x.shape
    acts = encode_reference(x, sae)
    valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).double()
    acts = acts * valid[:, :, None]
    if pool == "max":
        return acts.amax(dim=1) if T > 0 else acts.new_zeros(B, sae.d_sae)
    return acts.sum(dim=1) / lengths.clamp(min=1).double()[:, None]


# ----------------------------------------------------------------------------------------------------------
# Checks and packing
# ----------------------------------------------------------------------------------------------------------
def check_inputs(x: torch.Tensor, lengths, sae: SAEWeights, pool: str,
                 check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and return (packed tokens [N, d_in], lengths [B] int64 on x's device).

    check=False keeps the shape, dtype and device checks but skips those that read device data (lengths in range,
    their sum, NaN/inf in x): each is a host sync on a GPU. Packing padded x needs one sync either way."""
    if not isinstance(sae, SAEWeights):
        raise TypeError(f"sae must be SAEWeights, got {type(sae).__name__} (use SAEWeights.from_sae_lens)")
    check_float("x", x)
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be padded [B, T, d_in] or packed [N, d_in], got shape {tuple(x.shape)}")
    check_pool(pool)
    if x.shape[-1] != sae.d_in:
        raise ValueError(f"x has d_in={x.shape[-1]} but the SAE expects d_in={sae.d_in}")
    if x.device != sae.device:
        raise ValueError(f"x is on {x.device} but the SAE weights are on {sae.device}")
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if not check:
        if lengths.dim() != 1 or (x.dim() == 3 and lengths.shape[0] != x.shape[0]):
            raise ValueError(f"lengths must have shape [B], got {tuple(lengths.shape)}")
        lengths = lengths.to(x.device).long()
        return (pack_tokens(x, lengths) if x.dim() == 3 else x), lengths
    if x.dim() == 3:
        lengths = check_lengths(lengths, x.shape[0], x.shape[1]).to(x.device)
        xp = pack_tokens(x, lengths)
    else:
        if lengths.dim() != 1:
            raise ValueError(f"lengths must have shape [B], got {tuple(lengths.shape)}")
        lengths = check_lengths(lengths, lengths.shape[0], x.shape[0]).to(x.device)
        total = int(lengths.sum())
        if total != x.shape[0]:
            raise ValueError(f"packed x has {x.shape[0]} tokens but lengths sum to {total}")
        xp = x
    check_finite("x", xp)
    return xp, lengths


def pack_tokens(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[sum(lengths), d_in]: the valid tokens of every sample of a padded x [B, T, d_in], in order."""
    T = x.shape[1]
    valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]
    return x[valid]


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


def segment_pool(vals: torch.Tensor, lengths: torch.Tensor, pool: str, one_token: bool = False) -> torch.Tensor:
    """[len(lengths), F] fp32: max or sum of consecutive row segments of vals [sum(lengths), F] (0 for empty).

    torch.segment_reduce with initial 0: right for pooled activations (>= 0), and for the raw pre-activations of the
    pool-then-threshold path too, whose thresholds are >= 0 (max(0, m) > thr exactly when m > thr)."""
    if one_token:              # every length is 1 (the caller knows it from host lengths): each row is its pool
        return vals.clamp(min=0) if pool == "max" else vals
    return torch.segment_reduce(vals, "max" if pool == "max" else "sum", lengths=lengths, axis=0, initial=0.0)


# ----------------------------------------------------------------------------------------------------------
# TopK
# ----------------------------------------------------------------------------------------------------------
def topk_pool(pre: torch.Tensor, lengths: list[int], k: int, pool: str) -> torch.Tensor:
    """[len(lengths), d_sae] fp32 pooled TopK activations from one group's pre-activations [n, d_sae] fp32."""
    n, d_sae = pre.shape
    out = torch.zeros((len(lengths), d_sae), dtype=torch.float32 if pool == "max" else torch.float64,
                      device=pre.device)
    if n == 0:
        return out.float()
    top = torch.topk(pre, min(k, d_sae), dim=1)
    vals = top.values.clamp(min=0)
    seg = torch.repeat_interleave(torch.arange(len(lengths), device=pre.device),
                                  torch.tensor(lengths, device=pre.device), output_size=n)
    flat = (seg[:, None] * d_sae + top.indices).flatten()
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


# ----------------------------------------------------------------------------------------------------------
# Both fast paths: pooled blocks handed to a sink
# ----------------------------------------------------------------------------------------------------------
Sink = Callable[[slice, slice, torch.Tensor], None]     # sink(samples, columns, pooled fp32 [samples, columns])


def pooled_blocks_torch(xp: torch.Tensor, lengths: torch.Tensor, sae: SAEWeights, pool: str, sink: Sink) -> None:
    """The torch path: hand every (sample group, dictionary tile) block of pooled activations to sink."""
    lens = lengths.tolist()
    W, b_eff, thr_f = sae.W_enc, sae.effective_bias(), sae.feature_threshold()
    if one_pass_topk(sae):
        for b0, b1, t0, t1 in sample_groups(lens, max(1, CPU_TILE_ELEMENTS // sae.d_sae)):
            pre = torch.addmm(b_eff, xp[t0:t1].float(), W.float())
            sink(slice(b0, b1), slice(0, sae.d_sae), topk_pool(pre, lens[b0:b1], sae.k, pool))
        return
    thr_t = token_thresholds(xp, sae) if sae.activation == "topk" else None
    pool_then_threshold = pool == "max" and thr_t is None
    tile_n = min(sae.d_sae, CPU_TILE_N)
    for b0, b1, t0, t1 in sample_groups(lens, max(1, CPU_TILE_ELEMENTS // tile_n)):
        xg = xp[t0:t1].float()
        for j in range(0, sae.d_sae, tile_n):
            cols = slice(j, min(sae.d_sae, j + tile_n))
            pre = torch.addmm(b_eff[cols], xg, W[:, cols].float())
            if not pool_then_threshold:
                drop = pre <= thr_f[cols]
                if thr_t is not None:
                    drop |= pre < thr_t[t0:t1, None]
                pre.masked_fill_(drop, 0.0)
            pooled = segment_pool(pre, lengths[b0:b1], pool, one_token=all(n == 1 for n in lens[b0:b1]))
            if pool_then_threshold:
                pooled.masked_fill_(~(pooled > thr_f[cols]), 0.0)
            elif pool == "mean":
                pooled /= lengths[b0:b1].clamp(min=1).float()[:, None]
            sink(slice(b0, b1), cols, pooled)


def token_thresholds_triton(xp: torch.Tensor, sae: SAEWeights) -> torch.Tensor:
    """token_thresholds on the triton path, for every TopK width: fp32 pre-activations from the packed kernel
    (MODE_PRE) in chunks of at most GPU_TOPK_ELEMENTS, torch.topk on the device, no host sync. The pooling pass
    then keeps pre >= the cut, which is each token's top k wherever its k-th and (k+1)-th values differ."""
    N, k, d_sae = xp.shape[0], sae.k, sae.d_sae
    if k >= d_sae:
        return torch.full((N,), float("-inf"), device=xp.device)
    out = torch.empty(N, dtype=torch.float32, device=xp.device)
    step = max(1, GPU_TOPK_ELEMENTS // d_sae)
    pre = torch.empty((min(step, N), d_sae), dtype=torch.float32, device=xp.device)
    for s in range(0, N, step):
        e = min(N, s + step)
        packed_encode(xp[s:e], None, sae, "max", MODE_PRE, out=pre[:e - s])
        best = torch.topk(pre[:e - s], k + 1, dim=1).values
        out[s:e] = 0.5 * (best[:, k - 1] + best[:, k])
    return out


def token_thresholds_for(xp: torch.Tensor, sae: SAEWeights):
    """The per-token cut of the triton path's TopK (None for every other activation)."""
    return token_thresholds_triton(xp, sae) if sae.activation == "topk" else None


def _writer(out: torch.Tensor) -> Sink:
    """A sink that writes each pooled block into its place in out [B, d_sae]."""
    def write(rows, cols, pooled):
        out[rows, cols] = pooled
    return write


def _encode_pool_triton(xp, lengths, sae, pool, out):
    out.masked_fill_((lengths == 0)[:, None], 0.0)
    if xp.shape[0] == 0:
        return out
    launch = packed_encode(xp, Segments.of(lengths, xp.shape[0]), sae, pool, MODE_POOL, out=out,
                           thr_t=token_thresholds_for(xp, sae))
    samples, z = combine_boundary(launch, pool, lengths)
    out[samples] = z
    return out


def encode_pool(x: torch.Tensor, lengths, sae: SAEWeights, pool: str = "max", backend: str = "auto",
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Pooled SAE activations [B, d_sae] (fp32; float64 for backend="reference"). See the module docstring.

    out: optional preallocated fp32 [B, d_sae] tensor to write into (contiguous rows)."""
    xp, lengths = check_inputs(x, lengths, sae, pool)
    backend = resolve_backend(backend, x.device)
    if backend == "reference":
        ref = encode_pool_reference(xp, lengths, sae, pool)
        return ref if out is None else out.copy_(ref)
    shape = (lengths.shape[0], sae.d_sae)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=x.device)
    elif tuple(out.shape) != shape or out.dtype != torch.float32 or out.device != x.device or out.stride(1) != 1:
        raise ValueError(f"out must be a row-contiguous fp32 tensor of shape {list(shape)} on {x.device}")
    if backend == "triton":
        if xp.dtype == torch.float64 or sae.W_enc.dtype == torch.float64:
            raise TypeError("the Triton backend takes fp32/fp16/bf16 x and W_enc, not fp64")
        return _encode_pool_triton(xp, lengths, sae, pool, out)

    pooled_blocks_torch(xp, lengths, sae, pool, _writer(out))
    return out
