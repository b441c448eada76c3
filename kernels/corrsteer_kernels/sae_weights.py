"""SAEWeights: the tensors of one sparse autoencoder, in the sae-lens convention.

Shapes: W_enc [d_in, d_sae], b_enc [d_sae], b_dec [d_in] or None, threshold [d_sae] or None,
W_dec [d_sae, d_in] or None (needed only for steering).

Semantics (as sae-lens):
    pre  = (x - b_dec) @ W_enc + b_enc          (b_dec term only when b_dec is not None)
    relu     -> max(pre, 0)
    jumprelu -> pre where pre > threshold else 0, and never negative: relu(pre) * (pre > threshold)
    topk     -> per token the k largest entries of pre are kept (negatives -> 0), the rest 0

The fast paths fold b_dec into the bias (pre = x @ W_enc + b_eff, b_eff = b_enc - b_dec @ W_enc, computed in
float64 once) and express every activation as "keep pre where pre > feature_threshold[j] and pre >= token_threshold[t]".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ._common import check_finite, check_float

ACTIVATIONS = ("relu", "jumprelu", "topk")
# sae-lens architecture names -> our activation names
_SAE_LENS_ARCH = {"standard": "relu", "relu": "relu", "jumprelu": "jumprelu", "topk": "topk"}


@dataclass
class SAEWeights:
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    b_dec: Optional[torch.Tensor] = None
    threshold: Optional[torch.Tensor] = None
    k: Optional[int] = None
    activation: str = "relu"
    W_dec: Optional[torch.Tensor] = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        check_float("W_enc", self.W_enc, 2)
        d_in, d_sae = self.W_enc.shape
        if d_in == 0 or d_sae == 0:
            raise ValueError(f"W_enc must be non-empty, got shape {tuple(self.W_enc.shape)}")
        expect = {"b_enc": (self.b_enc, (d_sae,)), "b_dec": (self.b_dec, (d_in,)),
                  "threshold": (self.threshold, (d_sae,)), "W_dec": (self.W_dec, (d_sae, d_in))}
        for name, (t, shape) in expect.items():
            if t is None:
                continue
            check_float(name, t)
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {list(shape)} (W_enc is [d_in={d_in}, d_sae={d_sae}]), "
                                 f"got {list(t.shape)}")
            if t.device != self.W_enc.device:
                raise ValueError(f"{name} is on {t.device} but W_enc is on {self.W_enc.device}")
        if self.b_enc is None:
            raise ValueError("b_enc is required")
        if self.activation == "jumprelu" and self.threshold is None:
            raise ValueError("activation 'jumprelu' needs a threshold [d_sae]")
        if self.activation == "topk":
            if self.k is None or int(self.k) != self.k or int(self.k) < 1:
                raise ValueError(f"activation 'topk' needs an integer k >= 1, got {self.k!r}")
            self.k = int(self.k)
        for name in ("W_enc", "b_enc", "b_dec", "threshold", "W_dec"):
            t = getattr(self, name)
            if t is not None:
                check_finite(name, t)

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def to(self, device=None, dtype=None) -> "SAEWeights":
        """A copy on `device` with float tensors in `dtype` (threshold and biases keep fp32 or wider)."""
        def mv(t, keep_precision=False):
            if t is None:
                return None
            dt = dtype if (dtype is not None and not keep_precision) else t.dtype
            return t.to(device=device, dtype=dt)
        return SAEWeights(W_enc=mv(self.W_enc), b_enc=mv(self.b_enc, True), b_dec=mv(self.b_dec, True),
                          threshold=mv(self.threshold, True), k=self.k, activation=self.activation,
                          W_dec=mv(self.W_dec))

    # ---- derived tensors used by the fast paths (computed once, cached) ----
    def effective_bias(self) -> torch.Tensor:
        """b_enc - b_dec @ W_enc in fp32 [d_sae] (float64 arithmetic)."""
        if "b_eff" not in self._cache:
            b = self.b_enc.double()
            if self.b_dec is not None:
                b = b - self.b_dec.double() @ self.W_enc.double()
            self._cache["b_eff"] = b.float().contiguous()
        return self._cache["b_eff"]

    def feature_threshold(self) -> torch.Tensor:
        """fp32 [d_sae]: an activation is kept only where pre > this (0 for relu/topk, max(threshold, 0) for
        jumprelu)."""
        if "thr_f" not in self._cache:
            if self.activation == "jumprelu":
                t = self.threshold.float().clamp(min=0.0)
            else:
                t = torch.zeros(self.d_sae, dtype=torch.float32, device=self.device)
            self._cache["thr_f"] = t.contiguous()
        return self._cache["thr_f"]

    # ---- conversion ----
    @classmethod
    def from_sae_lens(cls, sae) -> "SAEWeights":
        """Convert a sae-lens SAE (standard/ReLU, JumpReLU or TopK architecture) without copying weights."""
        cfg = sae.cfg
        arch = getattr(cfg, "architecture", None)
        arch = arch() if callable(arch) else arch
        if arch not in _SAE_LENS_ARCH:
            raise ValueError(f"unsupported sae-lens architecture {arch!r}; supported: {sorted(_SAE_LENS_ARCH)}")
        norm = getattr(cfg, "normalize_activations", "none") or "none"
        if norm != "none":
            raise ValueError(f"sae-lens SAE with normalize_activations={norm!r} is not supported (only 'none')")
        if getattr(cfg, "reshape_activations", "none") not in ("none", None):
            raise ValueError(f"sae-lens SAE with reshape_activations={cfg.reshape_activations!r} is not supported")
        activation = _SAE_LENS_ARCH[arch]
        apply_b_dec = bool(getattr(cfg, "apply_b_dec_to_input", True))
        threshold = None
        if activation == "jumprelu":
            threshold = sae.threshold if hasattr(sae, "threshold") else torch.exp(sae.log_threshold)
        k = int(cfg.k) if activation == "topk" else None
        W_enc, b_enc, W_dec = sae.W_enc.detach(), sae.b_enc.detach(), sae.W_dec.detach()
        if getattr(cfg, "rescale_acts_by_decoder_norm", False):
            W_enc, b_enc, W_dec = fold_decoder_norm(W_enc, b_enc, W_dec)
        return cls(W_enc=W_enc, b_enc=b_enc, b_dec=sae.b_dec.detach() if apply_b_dec else None,
                   threshold=None if threshold is None else threshold.detach(), k=k,
                   activation=activation, W_dec=W_dec)


def fold_decoder_norm(W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor):
    """sae-lens's rescale_acts_by_decoder_norm scales pre by ||W_dec[j]|| and decodes with W_dec[j] / ||W_dec[j]||:
    return (W_enc, b_enc, W_dec) with both folded in, each in its own dtype."""
    norm = W_dec.float().norm(dim=-1)
    return ((W_enc.float() * norm).to(W_enc.dtype), (b_enc.float() * norm).to(b_enc.dtype),
            (W_dec.float() / norm[:, None]).to(W_dec.dtype))
