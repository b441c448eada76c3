"""encode_pool: SAE-encode every token of each sample and max/mean-pool the activations per sample.

    encode_pool(x, lengths, sae, pool="max", backend="auto") -> Tensor[B, d_sae] (fp32)

x [B, T, d_in] fp32/fp16/bf16; lengths [B] ints in [0, T]: sample b's tokens are x[b, :lengths[b]].
Activations are >= 0, so max-pool starts from 0; a length-0 sample pools to 0 under both pools.
Mean-pool divides the sum by lengths[b]. The full activation matrix [B*T, d_sae] is never built:
the torch path tiles the dictionary (and the tokens), the Triton kernel computes one
[BLOCK_T, BLOCK_N] tile of activations at a time and folds it into a [BLOCK_N] pooled row.

TopK SAEs need, per token, the k-th largest pre-activation over the whole dictionary before any tile can be
activated. `token_thresholds` computes it in a first tiled pass (running top-(k+1) per token) and returns the midpoint
between the k-th and (k+1)-th values, so the second pass keeps exactly the k largest even when its rounding differs
slightly from the first pass's (ties at the k-th value are measure-zero for real inputs and are all kept).
"""
from __future__ import annotations

from typing import Callable

import torch

from ._common import (HAS_TRITON, check_finite, check_float, check_lengths, check_pool, compute_dtype,
                      interpreting, resolve_backend, tl, triton)
from .sae_weights import SAEWeights

# CPU path budget: at most this many fp32 elements of pre-activations alive at once.
CPU_TILE_ELEMENTS = 1 << 22
CPU_TILE_N = 2048


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
    """float64 [B, d_sae]: the spec of encode_pool."""
    B, T, _ = x.shape
    acts = encode_reference(x, sae)
    valid = (torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]).double()
    acts = acts * valid[:, :, None]
    if pool == "max":
        return acts.amax(dim=1) if T > 0 else acts.new_zeros(B, sae.d_sae)
    return acts.sum(dim=1) / lengths.to(x.device).clamp(min=1).double()[:, None]


# ----------------------------------------------------------------------------------------------------------
# Shared checks
# ----------------------------------------------------------------------------------------------------------
def check_inputs(x: torch.Tensor, lengths, sae: SAEWeights, pool: str) -> torch.Tensor:
    if not isinstance(sae, SAEWeights):
        raise TypeError(f"sae must be SAEWeights, got {type(sae).__name__} (use SAEWeights.from_sae_lens)")
    check_float("x", x, 3)
    check_pool(pool)
    if x.shape[2] != sae.d_in:
        raise ValueError(f"x has d_in={x.shape[2]} but the SAE expects d_in={sae.d_in}")
    if x.device != sae.device:
        raise ValueError(f"x is on {x.device} but the SAE weights are on {sae.device}")
    lengths = check_lengths(lengths, x.shape[0], x.shape[1]).to(x.device)
    check_finite("x", x)
    return lengths


# ----------------------------------------------------------------------------------------------------------
# TopK pre-pass (shared by every backend): per-token keep threshold
# ----------------------------------------------------------------------------------------------------------
def _token_chunks(n_tok: int, d_sae: int):
    step = max(1, CPU_TILE_ELEMENTS // max(1, min(d_sae, CPU_TILE_N)))
    return [(s, min(n_tok, s + step)) for s in range(0, n_tok, step)]


def token_thresholds(xp: torch.Tensor, sae: SAEWeights) -> torch.Tensor:
    """fp32 [N]: for packed tokens xp [N, d_in], a value between the k-th and (k+1)-th largest pre-activation."""
    N, k, d_sae = xp.shape[0], sae.k, sae.d_sae
    if k >= d_sae:
        return torch.full((N,), float("-inf"), device=xp.device)
    W, b_eff = sae.W_enc, sae.effective_bias()
    tile = min(d_sae, CPU_TILE_N)
    out = torch.empty(N, dtype=torch.float32, device=xp.device)
    for s, e in _token_chunks(N, d_sae):
        xc = xp[s:e].float()
        best = None
        for j in range(0, d_sae, tile):
            pre = torch.addmm(b_eff[j:j + tile], xc, W[:, j:j + tile].float())
            cand = pre if best is None else torch.cat([best, pre], dim=1)
            best = torch.topk(cand, min(k + 1, cand.shape[1]), dim=1).values
        out[s:e] = 0.5 * (best[:, k - 1] + best[:, k])
    return out


def pack_tokens(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[sum(lengths), d_in]: the valid tokens of every sample, in order."""
    T = x.shape[1]
    valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]
    return x[valid]


# ----------------------------------------------------------------------------------------------------------
# Fast CPU path: torch, tiled over the dictionary and the tokens
# ----------------------------------------------------------------------------------------------------------
def pooled_tiles_torch(x: torch.Tensor, lengths: torch.Tensor, sae: SAEWeights, pool: str,
                       sink: Callable[[slice, torch.Tensor], None], tile_n: int | None = None) -> None:
    """Compute pooled activations one dictionary tile at a time; call sink(cols, pooled [B, len(cols)] fp32)."""
    B = x.shape[0]
    tile_n = tile_n or CPU_TILE_N
    xp = pack_tokens(x, lengths).float()
    N = xp.shape[0]
    ends = torch.cumsum(lengths, 0).tolist()
    starts = [e - n for e, n in zip(ends, lengths.tolist())]
    thr_t = token_thresholds(xp, sae) if sae.activation == "topk" else None
    W, b_eff, thr_f = sae.W_enc, sae.effective_bias(), sae.feature_threshold()
    # max-pool with per-feature thresholds only (relu, jumprelu): max_t act_t = (m if m > thr else 0) where
    # m = max_t pre_t, so the activation never needs to touch the [tokens, tile] matrix
    pool_then_threshold = pool == "max" and thr_t is None
    step = max(1, CPU_TILE_ELEMENTS // tile_n)
    for j in range(0, sae.d_sae, tile_n):
        cols = slice(j, min(sae.d_sae, j + tile_n))
        Wt = W[:, cols].float()
        init = float("-inf") if pool_then_threshold else 0.0
        pooled = torch.full((B, Wt.shape[1]), init, dtype=torch.float32, device=x.device)
        for s in range(0, N, step):
            e = min(N, s + step)
            pre = torch.addmm(b_eff[cols], xp[s:e], Wt)
            if not pool_then_threshold:
                drop = pre <= thr_f[cols]
                if thr_t is not None:
                    drop |= pre < thr_t[s:e, None]
                pre.masked_fill_(drop, 0.0)
            for b in range(B):
                lo, hi = max(starts[b], s), min(ends[b], e)
                if lo >= hi:
                    continue
                seg = pre[lo - s:hi - s]
                if pool == "max":
                    torch.maximum(pooled[b], seg.amax(0), out=pooled[b])
                else:
                    pooled[b] += seg.sum(0)
        if pool_then_threshold:
            pooled.masked_fill_(~(pooled > thr_f[cols]), 0.0)
        elif pool == "mean":
            pooled /= lengths.clamp(min=1).float()[:, None]
        sink(cols, pooled)


# ----------------------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------------------
if HAS_TRITON:

    @triton.jit
    def pooled_tile(x_ptr, w_ptr, beff_ptr, thrf_ptr, thrt_ptr, b, L, offs_n, mask_n, D,
                    stride_xb, stride_xt, stride_xk, stride_wk, stride_wn, stride_tb,
                    HAS_TOKEN_THR: tl.constexpr, MEAN: tl.constexpr, COMPUTE: tl.constexpr,
                    F32_DOT: tl.constexpr, PREC: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """fp32 [BLOCK_N]: pooled activations of sample b (L tokens) for the dictionary columns offs_n."""
        b64 = tl.cast(b, tl.int64)
        beff = tl.load(beff_ptr + offs_n, mask=mask_n, other=0.0)
        thrf = tl.load(thrf_ptr + offs_n, mask=mask_n, other=float("inf"))
        offs_t0 = tl.arange(0, BLOCK_T)
        offs_k0 = tl.arange(0, BLOCK_K)
        pooled = tl.zeros([BLOCK_N], dtype=tl.float32)
        for t0 in range(0, L, BLOCK_T):
            offs_t = t0 + offs_t0
            mask_t = offs_t < L
            acc = tl.zeros([BLOCK_T, BLOCK_N], dtype=tl.float32)
            for k0 in range(0, D, BLOCK_K):
                offs_k = k0 + offs_k0
                mask_k = offs_k < D
                xt = tl.load(x_ptr + b64 * stride_xb + offs_t[:, None] * stride_xt + offs_k[None, :] * stride_xk,
                             mask=mask_t[:, None] & mask_k[None, :], other=0.0)
                wt = tl.load(w_ptr + offs_k[:, None].to(tl.int64) * stride_wk + offs_n[None, :] * stride_wn,
                             mask=mask_k[:, None] & mask_n[None, :], other=0.0)
                if F32_DOT:
                    acc = tl.dot(xt.to(tl.float32), wt.to(tl.float32), acc, input_precision=PREC)
                else:
                    acc = tl.dot(xt.to(COMPUTE), wt.to(COMPUTE), acc)
            pre = acc + beff[None, :]
            keep = (pre > thrf[None, :]) & mask_t[:, None]
            if HAS_TOKEN_THR:
                thrt = tl.load(thrt_ptr + b64 * stride_tb + offs_t, mask=mask_t, other=float("inf"))
                keep = keep & (pre >= thrt[:, None])
            act = tl.where(keep, pre, 0.0)
            if MEAN:
                pooled += tl.sum(act, axis=0)
            else:
                pooled = tl.maximum(pooled, tl.max(act, axis=0))
        if MEAN:
            pooled = pooled / tl.maximum(L, 1).to(tl.float32)
        return pooled

    @triton.jit
    def _encode_pool_kernel(x_ptr, w_ptr, beff_ptr, thrf_ptr, thrt_ptr, len_ptr, out_ptr, N, D,
                            stride_xb, stride_xt, stride_xk, stride_wk, stride_wn, stride_tb, stride_ob,
                            HAS_TOKEN_THR: tl.constexpr, MEAN: tl.constexpr, COMPUTE: tl.constexpr,
                            F32_DOT: tl.constexpr, PREC: tl.constexpr,
                            BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # grid (B, cdiv(N, BLOCK_N)): samples vary fastest so concurrent programs share W_enc tiles in L2.
        b = tl.program_id(0)
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        L = tl.load(len_ptr + b).to(tl.int32)
        pooled = pooled_tile(x_ptr, w_ptr, beff_ptr, thrf_ptr, thrt_ptr, b, L, offs_n, mask_n, D,
                             stride_xb, stride_xt, stride_xk, stride_wk, stride_wn, stride_tb,
                             HAS_TOKEN_THR, MEAN, COMPUTE, F32_DOT, PREC, BLOCK_T, BLOCK_N, BLOCK_K)
        tl.store(out_ptr + b.to(tl.int64) * stride_ob + offs_n, pooled, mask=mask_n)


_TL_DTYPES = {}
if HAS_TRITON:
    _TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def triton_launch_args(x: torch.Tensor, lengths: torch.Tensor, sae: SAEWeights, pool: str) -> dict:
    """Everything both Triton kernels need: pointers, strides, constexprs (shared with encode_pool_stats)."""
    if x.dtype == torch.float64 or sae.W_enc.dtype == torch.float64:
        raise TypeError("the Triton backend takes fp32/fp16/bf16 x and W_enc, not fp64")
    B, T, D = x.shape
    thr_t = None
    if sae.activation == "topk":
        thr_t = torch.full((B, T), float("inf"), dtype=torch.float32, device=x.device)
        valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]
        thr_t[valid] = token_thresholds(pack_tokens(x, lengths), sae)
    interp = interpreting()
    cdt = compute_dtype(x.dtype, sae.W_enc.dtype)
    # the interpreter's tl.dot is wrong on bf16 operands: it multiplies in fp32 there (same products, fp32 sums)
    f32 = interp or cdt == torch.float32
    blocks = dict(BLOCK_T=16, BLOCK_N=32, BLOCK_K=16) if interp else dict(BLOCK_T=64, BLOCK_N=128, BLOCK_K=64)
    W = sae.W_enc
    return dict(
        tensors=(x, W, sae.effective_bias(), sae.feature_threshold(), thr_t if thr_t is not None else x),
        strides=(x.stride(0), x.stride(1), x.stride(2), W.stride(0), W.stride(1), T),
        meta=dict(HAS_TOKEN_THR=thr_t is not None, MEAN=pool == "mean", COMPUTE=_TL_DTYPES[cdt], F32_DOT=f32,
                  PREC="ieee" if interp else "tf32x3", **blocks),
        launch={} if interp else dict(num_warps=8, num_stages=3),
        lengths=lengths.to(torch.int32).contiguous(), N=sae.d_sae, D=D,
    )


def _encode_pool_triton(x, lengths, sae, pool, out):
    B = x.shape[0]
    if B == 0:
        return out
    a = triton_launch_args(x, lengths, sae, pool)
    grid = (B, triton.cdiv(a["N"], a["meta"]["BLOCK_N"]))
    _encode_pool_kernel[grid](*a["tensors"], a["lengths"], out, a["N"], a["D"], *a["strides"], out.stride(0),
                              **a["meta"], **a["launch"])
    return out


# ----------------------------------------------------------------------------------------------------------
# Public op
# ----------------------------------------------------------------------------------------------------------
def encode_pool(x: torch.Tensor, lengths, sae: SAEWeights, pool: str = "max", backend: str = "auto",
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Pooled SAE activations [B, d_sae] (fp32; float64 for backend="reference"). See the module docstring.

    out: optional preallocated fp32 [B, d_sae] tensor to write into (contiguous rows)."""
    lengths = check_inputs(x, lengths, sae, pool)
    backend = resolve_backend(backend, x.device)
    if backend == "reference":
        ref = encode_pool_reference(x, lengths, sae, pool)
        return ref if out is None else out.copy_(ref)
    shape = (x.shape[0], sae.d_sae)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=x.device)
    elif tuple(out.shape) != shape or out.dtype != torch.float32 or out.device != x.device or out.stride(1) != 1:
        raise ValueError(f"out must be a row-contiguous fp32 tensor of shape {list(shape)} on {x.device}")
    if backend == "triton":
        return _encode_pool_triton(x, lengths, sae, pool, out)

    def write(cols, pooled):
        out[:, cols] = pooled

    pooled_tiles_torch(x, lengths, sae, pool, write)
    return out
