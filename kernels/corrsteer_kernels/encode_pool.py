"""encode_pool: SAE-encode every token of each sample and max/mean-pool the activations per sample.

    encode_pool(x, lengths, sae, pool="max", backend="auto", out=None) -> Tensor[B, d_sae] (fp32)

x is either padded, [B, T, d_in] with lengths [B] in [0, T] (sample b's tokens are x[b, :lengths[b]]), or packed,
[N, d_in] with lengths [B] summing to N (sample b's tokens are the next lengths[b] rows) — fp32/fp16/bf16.
Activations are >= 0, so max-pool starts from 0; a length-0 sample pools to 0 under both pools; mean-pool divides
the sum by lengths[b]. The activation matrix of all tokens [N, d_sae] is never built:
  - torch path (CPU, torch_path.py): consecutive samples in groups, one GEMM per group and dictionary tile, a few
    whole-block passes; max-pool (relu, jumprelu) pools the raw pre-activations and thresholds once per sample.
  - triton path: the packed-token kernel (packed_kernel.py), tiles of tokens spanning samples.
  - TopK, torch path (d_sae <= TOPK_ONE_PASS_MAX): one GEMM pass per group of samples over the whole dictionary
    width; each token's k largest pre-activations (torch.topk, unsorted) are pooled by scatter. Wider
    TopK dictionaries, and every TopK dictionary on the triton path, take two passes: a first finds each token's
    cut (the midpoint between its k-th and (k+1)-th pre-activation; `token_thresholds`, `token_thresholds_triton`),
    then the pooling pass keeps what lies at or above it. With CORRSTEER_TOPK_STRATEGY=one_pass the triton path
    takes topk_kernel.py instead (one GEMM pass, the cut found by tl.topk in programs owning whole token rows).
"""
from __future__ import annotations

import warnings

import torch

from ._common import (
    KernelFallbackWarning,
    KernelUnavailable,
    check_finite,
    check_float,
    check_lengths,
    check_pool,
    interpreting,
    kernel_enabled,
    resolve_backend,
    switch_off,
    switched_off,
)
from .combine_kernel import combine_launch, combine_strategy
from .launch import MODE_POOL, MODE_PRE, MODE_STATS, Launch, Segments
from .packed_kernel import combine_boundary, n_bucket, packed_encode
from .sae_weights import SAEWeights
from .topk_kernel import topk_encode, topk_strategy
from .torch_path import TopKRows, pooled_blocks_torch

GPU_TOPK_ELEMENTS = 1 << 26      # triton path, TopK cuts: one chunk's pre-activations [tokens, d_sae]
_TOPK_ONE_PASS: dict = {}        # CORRSTEER_TOPK_STRATEGY=auto: (d_in, d_sae, k, dtypes, N bucket) -> one pass faster
TORCH_FALLBACKS: list = []       # why an automatic triton backend fell back to the torch path (this process)


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


def topk_one_pass(xp: torch.Tensor, segs: Segments, sae: SAEWeights) -> bool:
    """Whether a TopK dictionary takes the one-pass kernel: CORRSTEER_TOPK_STRATEGY=one_pass (KernelUnavailable if
    the topk family is switched off), or =auto where both strategies were timed once for the shape and token count
    bucket (MODE_STATS, max-pool; CUDA, >= 1024 tokens; two_pass elsewhere, and where the one-pass kernel is off)."""
    s = topk_strategy()
    if s == "one_pass":
        if not kernel_enabled("topk"):
            raise KernelUnavailable(f"CORRSTEER_TOPK_STRATEGY=one_pass: the topk kernel is switched off "
                                    f"({switched_off()['topk']})")
        return True
    if s != "auto" or not kernel_enabled("topk") or interpreting() or not xp.is_cuda or xp.shape[0] < 1024:
        return False
    key = (xp.shape[1], sae.d_sae, sae.k, xp.dtype, sae.W_enc.dtype, n_bucket(xp.shape[0]))
    if key not in _TOPK_ONE_PASS:
        from triton.testing import do_bench
        _TOPK_ONE_PASS[key] = one_pass_faster(xp, segs, sae, lambda f: do_bench(f, warmup=5, rep=20))
    return _TOPK_ONE_PASS[key]


def one_pass_faster(xp: torch.Tensor, segs: Segments, sae: SAEWeights, timer) -> bool:
    """CORRSTEER_TOPK_STRATEGY=auto's choice: timer(fn) of the one-pass kernel against the two-pass path (MODE_STATS,
    max-pool). Each timing is inside try: a one-pass kernel that fails to compile or run is switched off (reason
    recorded) and the two-pass path (the proven one) is chosen; a two-pass failure chooses one pass."""
    y = torch.zeros(segs.starts.shape[0], dtype=torch.float64, device=xp.device)
    try:
        one = timer(lambda: topk_encode(xp, segs, sae, "max", MODE_STATS, y=y))
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:              # noqa: BLE001  (recorded: kernel_enabled / switched_off)
        switch_off("topk", f"{type(e).__name__}: {str(e)[:300]}")
        return False
    try:
        two = timer(lambda: packed_encode(xp, segs, sae, "max", MODE_STATS, y=y,
                                          thr_t=token_thresholds_triton(xp, sae)))
    except (KernelUnavailable, torch.cuda.OutOfMemoryError):
        raise
    except Exception:                   # noqa: BLE001  (the one-pass kernel ran: take it)
        return True
    return one < two


def packed_launch(xp: torch.Tensor, segs: Segments, sae: SAEWeights, pool: str, mode: int, y=None,
                  out=None) -> Launch:
    """The triton path's launch: the one-pass TopK kernel for TopK dictionaries where topk_one_pass says so, else
    the packed op (fused, split or fused_n) with the TopK cuts of token_thresholds_for. Chosen by
    CORRSTEER_TOPK_STRATEGY=auto, a one-pass launch that fails switches the topk family off and takes two passes."""
    if sae.activation == "topk" and topk_one_pass(xp, segs, sae):
        if topk_strategy() == "one_pass":
            return topk_encode(xp, segs, sae, pool, mode, y=y, out=out)
        try:
            return topk_encode(xp, segs, sae, pool, mode, y=y, out=out)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:          # noqa: BLE001  (recorded; the two-pass path below)
            switch_off("topk", f"{type(e).__name__}: {str(e)[:300]}")
    return packed_encode(xp, segs, sae, pool, mode, y=y, out=out, thr_t=token_thresholds_for(xp, sae))


def combine_kernel_on() -> bool:
    """CORRSTEER_COMBINE=kernel (KernelUnavailable where the combine family is switched off)."""
    if combine_strategy() != "kernel":
        return False
    if not kernel_enabled("combine"):
        raise KernelUnavailable(f"CORRSTEER_COMBINE=kernel: the combine kernel is switched off "
                                f"({switched_off()['combine']})")
    return True


def torch_fallback(what: str, error: Exception) -> None:
    """Record that an automatic triton backend fell back to the torch path (one warning per reason)."""
    reason = f"{what}: {type(error).__name__}: {str(error)[:300]}"
    if reason not in TORCH_FALLBACKS:
        TORCH_FALLBACKS.append(reason)
        warnings.warn(f"corrsteer_kernels: no Triton strategy ran ({reason[:200]}); using the torch path",
                      KernelFallbackWarning, stacklevel=3)


def writer(out: torch.Tensor):
    """A torch-path sink that writes each pooled block into its place in out [B, d_sae] (adding 0.0 on the way
    turns the -0.0 of dropped negative pre-activations into +0.0, as the reference has it)."""
    def write(rows, cols, pooled, mask):
        if isinstance(pooled, TopKRows):
            out[rows].zero_().scatter_(1, pooled.indices, pooled.values.add(0.0))
        else:
            torch.add(pooled, 0.0, out=out[rows, cols])
    return write


def _encode_pool_triton(xp, lengths, sae, pool, out):
    out.masked_fill_((lengths == 0)[:, None], 0.0)
    if xp.shape[0] == 0:
        return out
    segs = Segments.of(lengths, xp.shape[0])
    launch = packed_launch(xp, segs, sae, pool, MODE_POOL, out=out)
    if combine_kernel_on():
        return combine_launch(launch, segs, pool, MODE_POOL, out=out)
    samples, z = combine_boundary(launch, pool, lengths)
    out[samples] = z
    return out


def encode_pool(x: torch.Tensor, lengths, sae: SAEWeights, pool: str = "max", backend: str = "auto",
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Pooled SAE activations [B, d_sae] (fp32; float64 for backend="reference"). See the module docstring.

    out: optional preallocated fp32 [B, d_sae] tensor to write into (contiguous rows)."""
    xp, lengths = check_inputs(x, lengths, sae, pool)
    requested, backend = backend, resolve_backend(backend, x.device)
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
        if requested == "triton":
            return _encode_pool_triton(xp, lengths, sae, pool, out)
        try:
            return _encode_pool_triton(xp, lengths, sae, pool, out)
        except KernelUnavailable as e:
            torch_fallback("encode_pool", e)

    pooled_blocks_torch(xp, lengths, sae, pool, writer(out))
    return out
