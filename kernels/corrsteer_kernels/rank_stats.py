"""RankStats: CorrStats plus the sums the paper's comparison rankings need, from the same single pass.

    stats = RankStats(d_sae)
    stats.update(encode_pool(x, lengths, sae, pool), y)      # pooled [B, d_sae] fp32, y [B]
    stats.score("pearson" | "mi" | "fisher" | "caa")          # float64 [d_sae], higher = favours correct answers

Extra fields (float64 raw sums, mergeable by addition; CorrStats' own are shifted, see corr_stats):
    sum_z2_pos [d_sae]        sum of z^2 over samples with y > 0
    hist [2, N_BINS, d_sae]   sample counts per (class c = [y > 0], bin of z); N_BINS = 23

Rankings (y binarised as y > 0; pos = correct, neg = the rest):
    pearson  Pearson r (CorrStats.pearson)
    caa      mean(z | pos) - mean(z | neg)                                  (CAA-style mean difference)
    fisher   E[z^2 | pos] / max(E[z^2 | neg], FISHER_EPS)                   (DSG-style second-moment ratio)
    mi       I(bin(z); c) in nats from the 2 x 23 histogram                 (SPARE-style mutual information)

Bins: the 22 edges are 10^(d + k/4) for d = -6..0, k = 1..3 (21 values, 10^-5.75 .. 10^0.75) plus 1.0, sorted;
bin(z) = the number of edges <= z, 0..22. Bin 0 therefore holds every z < 10^-5.75, inactive features (z <= 0)
included; bin 22 holds z >= 10^0.75.

The fused kernels (encode_pool_stats) produce only CorrStats' sums; RankStats is fed the pooled values of
`encode_pool` (batch-bounded memory, [B, d_sae] per batch) and computes both CorrStats' sums and its own.
"""
from __future__ import annotations

import math

import torch

from ._common import check_finite, check_float
from .corr_stats import CorrStats, check_scores, column_mean, feature_sums

RANKINGS = ("pearson", "mi", "fisher", "caa")
FISHER_EPS = 1e-6
BIN_EDGES = tuple(sorted([10.0 ** (d + k / 4) for d in range(-6, 1) for k in (1, 2, 3)] + [1.0]))
N_BINS = len(BIN_EDGES) + 1


def bin_index(z: torch.Tensor) -> torch.Tensor:
    """int64, same shape as z: the number of BIN_EDGES <= z (0..N_BINS-1)."""
    edges = torch.tensor(BIN_EDGES, dtype=torch.float64, device=z.device)
    return torch.bucketize(z.double(), edges, right=True)


def histogram_sums(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """float64 [2, N_BINS, F]: per class (y <= 0, y > 0) and bin the number of samples of each feature."""
    B, F = z.shape
    idx = bin_index(z)
    pos = (y > 0).double()[:, None].expand(B, F)
    out = torch.zeros(2, N_BINS, F, dtype=torch.float64, device=z.device)
    out[1].scatter_add_(0, idx, pos)
    out[0].scatter_add_(0, idx, 1.0 - pos)
    return out


class RankStats(CorrStats):
    """CorrStats with sum_z2_pos and the MI histogram; see the module docstring."""

    def __init__(self, d_sae: int, device=None):
        super().__init__(d_sae, device=device)
        self.sum_z2_pos = torch.zeros(self.d_sae, dtype=torch.float64, device=device)
        self.hist = torch.zeros(2, N_BINS, self.d_sae, dtype=torch.float64, device=device)

    def __repr__(self):
        return f"RankStats(d_sae={self.d_sae}, n={int(self.n)}, n_pos={int(self.n_pos)})"

    def update(self, pooled: torch.Tensor, y) -> "RankStats":
        check_float("pooled", pooled, 2)
        if pooled.shape[1] != self.d_sae:
            raise ValueError(f"pooled has {pooled.shape[1]} features, stats track {self.d_sae}")
        y = check_scores(y, pooled.shape[0], self.device)
        check_finite("pooled", pooled)
        z = pooled.to(self.device).double()
        self.add_feature_sums(slice(None), feature_sums(z, y, self.shift_for(slice(None), lambda: column_mean(z))))
        self.add_scalar_sums(y)
        self.sum_z2_pos += (y > 0).double() @ (z * z)
        self.hist += histogram_sums(z, y)
        return self

    def merge(self, other: "CorrStats") -> "RankStats":
        if not isinstance(other, RankStats):
            raise ValueError("can only merge RankStats with RankStats")
        super().merge(other)
        self.sum_z2_pos += other.sum_z2_pos.to(self.device)
        self.hist += other.hist.to(self.device)
        return self

    def clear(self) -> "RankStats":
        super().clear()
        self.sum_z2_pos.zero_()
        self.hist.zero_()
        return self

    # ---- rankings ----
    def _n_neg(self) -> torch.Tensor:
        return self.n - self.n_pos

    def caa(self) -> torch.Tensor:
        """float64 [d_sae]: mean z over correct minus mean z over incorrect samples (0 without both classes)."""
        n_pos, n_neg = self.n_pos, self._n_neg()
        if float(n_pos) == 0 or float(n_neg) == 0:
            return torch.zeros_like(self.sum_z)
        return self.sum_z_pos / n_pos - (self.sum_z - self.sum_z_pos) / n_neg

    def fisher(self) -> torch.Tensor:
        """float64 [d_sae]: E[z^2 | correct] / max(E[z^2 | incorrect], FISHER_EPS) (0 without both classes)."""
        n_pos, n_neg = self.n_pos, self._n_neg()
        if float(n_pos) == 0 or float(n_neg) == 0:
            return torch.zeros_like(self.sum_z)
        e_pos = self.sum_z2_pos / n_pos
        e_neg = (self.sum_z2 - self.sum_z2_pos) / n_neg
        return e_pos / e_neg.clamp(min=FISHER_EPS)

    def mutual_information(self) -> torch.Tensor:
        """float64 [d_sae]: I(bin(z); [y > 0]) in nats from the histogram (0 when n = 0)."""
        n = float(self.n)
        if n == 0:
            return torch.zeros_like(self.sum_z)
        p = self.hist / n                                      # [2, N_BINS, F]
        p_c = p.sum(1, keepdim=True)                           # [2, 1, F]
        p_b = p.sum(0, keepdim=True)                           # [1, N_BINS, F]
        ratio = torch.where(p > 0, p / (p_c * p_b).clamp(min=1e-300), torch.ones_like(p))
        return (p * torch.log(ratio)).sum((0, 1)).clamp(min=0.0)

    def score(self, ranking: str) -> torch.Tensor:
        """float64 [d_sae]: the ranking's score; higher ranks first."""
        if ranking == "pearson":
            return self.pearson()
        if ranking == "caa":
            return self.caa()
        if ranking == "fisher":
            return self.fisher()
        if ranking == "mi":
            return self.mutual_information()
        raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")

    def favours_correct(self, ranking: str) -> torch.Tensor:
        """bool [d_sae]: the feature points towards correct answers under `ranking` (r > 0; caa > 0; fisher > 1;
        mi > 0 with caa > 0, since MI has no sign)."""
        if ranking == "pearson":
            return self.pearson() > 0
        if ranking == "fisher":
            return self.fisher() > 1.0
        if ranking == "mi":
            return (self.mutual_information() > 0) & (self.caa() > 0)
        return self.caa() > 0

    # ---- persistence ----
    def state_dict(self) -> dict:
        out = super().state_dict()
        out["sum_z2_pos"] = self.sum_z2_pos.clone()
        out["hist"] = self.hist.clone()
        return out

    def load_state_dict(self, state: dict) -> "RankStats":
        for name, shape in (("sum_z2_pos", (self.d_sae,)), ("hist", (2, N_BINS, self.d_sae))):
            if name not in state:
                raise KeyError(f"RankStats state is missing {name!r}")
            if tuple(state[name].shape) != shape:
                raise ValueError(f"state[{name!r}] has shape {tuple(state[name].shape)}, expected {shape}")
        super().load_state_dict(state)
        self.sum_z2_pos.copy_(state["sum_z2_pos"].to(self.sum_z2_pos))
        self.hist.copy_(state["hist"].to(self.hist))
        return self


assert N_BINS == 23 and math.isclose(BIN_EDGES[-1], 10 ** 0.75)
