"""Random test cases for the encode ops, with a guaranteed decision margin.

Every activation keeps pre-activations above a threshold (0, the JumpReLU threshold, or a TopK per-token cut).
fp32 kernels round differently from the float64 reference, so a pre-activation within rounding of its threshold
could legitimately flip. `make_case` draws fresh random inputs and redraws (deterministically) until every valid
pre-activation is at least MARGIN away from its threshold, so comparisons can be strict everywhere.
"""
import torch

from corrsteer_kernels import SAEWeights

MARGIN = 2e-5


def make_sae(gen, d_in, d_sae, activation, k=None, wdtype=torch.float32, b_dec=True):
    W_enc = torch.randn(d_in, d_sae, generator=gen) / d_in ** 0.5
    b_enc = 0.3 * torch.randn(d_sae, generator=gen) - 0.1
    thr = None
    if activation == "jumprelu":  # some thresholds negative: jumprelu still never goes below 0
        thr = 0.6 * torch.rand(d_sae, generator=gen) - 0.1
    return SAEWeights(W_enc=W_enc.to(wdtype), b_enc=b_enc,
                      b_dec=0.2 * torch.randn(d_in, generator=gen) if b_dec else None,
                      threshold=thr, k=k if activation == "topk" else None, activation=activation,
                      W_dec=torch.randn(d_sae, d_in, generator=gen).to(wdtype))


def margins(x, lengths, sae):
    """Smallest distance of a valid token's float64 pre-activation from its keep threshold."""
    B, T, _ = x.shape
    x64 = x.double() - (sae.b_dec.double() if sae.b_dec is not None else 0)
    pre = x64 @ sae.W_enc.double() + sae.b_enc.double()
    valid = torch.arange(T)[None, :] < lengths[:, None]
    pre = pre[valid]                                       # [N, d_sae]
    if pre.numel() == 0:
        return float("inf")
    m = pre.abs().min()
    if sae.activation == "jumprelu":
        m = min(m, (pre - sae.threshold.double()).abs().min())
    if sae.activation == "topk" and sae.k < sae.d_sae:
        top = torch.topk(pre, sae.k + 1, dim=1).values
        m = min(m, (top[:, sae.k - 1] - top[:, sae.k]).min())
    return float(m)


def make_case(seed, B, T, d_in, d_sae, activation, dtype=torch.float32, k=7, lengths=None, wdtype=None,
              b_dec=True, need_margin=True):
    """(x [B, T, d_in] in dtype, lengths [B] int64, sae) on the CPU with every decision MARGIN clear."""
    for attempt in range(50):
        gen = torch.Generator().manual_seed(seed * 1000 + attempt)
        sae = make_sae(gen, d_in, d_sae, activation, k=k, wdtype=wdtype or torch.float32, b_dec=b_dec)
        x = torch.randn(B, T, d_in, generator=gen).to(dtype)
        L = lengths if lengths is not None else torch.randint(0, T + 1, (B,), generator=gen)
        L = torch.as_tensor(L, dtype=torch.long)
        if not need_margin or margins(x, L, sae) > MARGIN:
            return x, L, sae
    raise RuntimeError("could not draw a case with a clear margin; shrink the shapes")


def poisoned_empty(*size, dtype=None, device=None):
    """A stand-in for torch.empty (monkeypatched into a launcher) that fills int32 with -7 and floats with NaN, so a
    kernel that leaves part of an output unwritten shows."""
    size = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
    return torch.full(size, -7 if dtype == torch.int32 else float("nan"), dtype=dtype, device=device)
