"""CorrStats: mergeable float64 sufficient statistics for Pearson r between pooled features z and a score y.

Per run:      n, sum_y, sum_y2, n_pos (samples with y > 0)
Per feature:  sum_z, sum_z2, sum_zy, sum_z_pos (sum of z over y > 0), n_active (z > 0),
              n_active_pos (z > 0 and y > 0), sum_z_active_pos (sum of z over z > 0 and y > 0)

Everything is a plain sum, so two CorrStats merge by addition (across batches, shards or torch.distributed ranks)
and the result equals one CorrStats fed both streams, up to float64 rounding.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from ._common import check_finite, check_float

# The one definition of the fields: their order is the row order of CorrStats.features / .scalars, of
# feature_sums / scalar_sums and of the kernels' partial sums; CorrStats reads each by name (stats.sum_z_pos).
FEATURE_FIELDS = ("sum_z", "sum_z2", "sum_zy", "sum_z_pos", "n_active", "n_active_pos", "sum_z_active_pos")
SCALAR_FIELDS = ("n", "sum_y", "sum_y2", "n_pos")


def feature_sums(z: torch.Tensor, y: torch.Tensor, nonneg: bool = False) -> torch.Tensor:
    """float64 [7, F]: the per-feature sums (FEATURE_FIELDS order) of pooled z [B, F] against y [B].

    nonneg=True (pooled SAE activations, never negative) takes sum_z_active_pos = sum_z_pos, one pass fewer."""
    active = z > 0
    z = z.double()
    y = y.double()
    pos = (y > 0).double()
    ones = torch.ones_like(y)
    lin = torch.stack([ones, y, pos]) @ z                      # sum_z, sum_zy, sum_z_pos
    cnt = torch.stack([ones, pos]) @ active.double()           # n_active, n_active_pos
    zap = lin[2] if nonneg else pos @ (z * active)
    return torch.stack([lin[0], torch.linalg.vecdot(z, z, dim=0), lin[1], lin[2], cnt[0], cnt[1], zap])


def scalar_sums(y: torch.Tensor) -> torch.Tensor:
    """float64 [4]: n, sum_y, sum_y2, n_pos of scores y [B]. All on y's device: `new_tensor(n)` would copy a host
    scalar per call, a host sync on a GPU (52 per collection batch on a 26-layer model, seen with the sync debug mode
    on an H200)."""
    y = y.double()
    return torch.stack([torch.ones_like(y).sum(), y.sum(), (y * y).sum(), (y > 0).double().sum()])


def check_scores(y, B: int, device) -> torch.Tensor:
    """Validate scores y [B] (bool, int or float, finite); return them as float64 on `device`."""
    y = torch.as_tensor(y, device=device)
    if y.dim() != 1 or y.shape[0] != B:
        raise ValueError(f"y must have shape [{B}], got {tuple(y.shape)}")
    y = y.double().contiguous()
    check_finite("y", y)
    return y


class CorrStats:
    """Streaming Pearson statistics over d_sae features, float64 accumulators.

    update(pooled [B, d_sae], y [B]); merge(other); pearson() -> [d_sae];
    mean_given_positive(); mean_active_given_positive(); state_dict() / load_state_dict().
    Every field is a named view: stats.sum_z_pos ([d_sae], FEATURE_FIELDS), stats.n_pos (0-d, SCALAR_FIELDS).
    """

    def __init__(self, d_sae: int, device=None):
        if int(d_sae) != d_sae or d_sae < 1:
            raise ValueError(f"d_sae must be a positive integer, got {d_sae!r}")
        self.d_sae = int(d_sae)
        self.features = torch.zeros(len(FEATURE_FIELDS), self.d_sae, dtype=torch.float64, device=device)
        self.scalars = torch.zeros(len(SCALAR_FIELDS), dtype=torch.float64, device=device)

    @property
    def device(self) -> torch.device:
        return self.features.device

    def __repr__(self):
        return f"CorrStats(d_sae={self.d_sae}, n={int(self.n)}, n_pos={int(self.n_pos)})"

    # ---- accumulation ----
    def update(self, pooled: torch.Tensor, y, check: bool = True) -> "CorrStats":
        """Fold pooled [B, d_sae] against scores y [B]. check=False skips the NaN/inf scans (host syncs on a GPU)
        for callers that guarantee finite inputs; shapes are always checked."""
        check_float("pooled", pooled, 2)
        if pooled.shape[1] != self.d_sae:
            raise ValueError(f"pooled has {pooled.shape[1]} features, stats track {self.d_sae}")
        if check:
            y = check_scores(y, pooled.shape[0], self.device)
            check_finite("pooled", pooled)
        else:
            y = torch.as_tensor(y, device=self.device).double()
        self.add_feature_sums(slice(None), feature_sums(pooled.to(self.device), y))
        self.add_scalar_sums(y)
        return self

    def add_feature_sums(self, cols: slice, sums: torch.Tensor) -> None:
        """Add precomputed float64 sums [7, n_cols] (FEATURE_FIELDS order) for dictionary columns `cols`."""
        self.features[:, cols] += sums

    def add_scalar_sums(self, y: torch.Tensor) -> None:
        self.scalars += scalar_sums(y)

    def merge(self, other: "CorrStats") -> "CorrStats":
        """In place: self becomes the statistics of both streams. Returns self."""
        if not isinstance(other, CorrStats) or other.d_sae != self.d_sae:
            raise ValueError("can only merge CorrStats of the same d_sae")
        self.features += other.features.to(self.device)
        self.scalars += other.scalars.to(self.device)
        return self

    def all_reduce(self, group=None) -> "CorrStats":
        """Sum the statistics over all torch.distributed ranks in place (every rank ends with the total)."""
        for t in (self.features, self.scalars):
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        return self

    # ---- results ----
    def pearson(self) -> torch.Tensor:
        """float64 [d_sae]: Pearson r of each feature with y; 0 where either variance is 0 (never NaN)."""
        n, sy, syy = self.n, self.sum_y, self.sum_y2
        sz, szz, szy = self.sum_z, self.sum_z2, self.sum_zy
        cov = n * szy - sz * sy
        var_z = n * szz - sz * sz
        var_y = n * syy - sy * sy
        # treat variance lost to cancellation (relative to the raw second moment) as zero
        ok_z = var_z > 1e-12 * n * szz
        ok_y = var_y > 1e-12 * n * syy
        denom = torch.sqrt(var_z.clamp(min=0) * var_y.clamp(min=0))
        r = torch.where(ok_z & ok_y, cov / torch.where(ok_z & ok_y, denom, torch.ones_like(denom)),
                        torch.zeros_like(cov))
        return r.clamp(-1.0, 1.0)

    def mean_given_positive(self) -> torch.Tensor:
        """float64 [d_sae]: mean pooled activation over samples with y > 0 (0 if there are none)."""
        return self.sum_z_pos / self.n_pos.clamp(min=1)

    def mean_active_given_positive(self) -> torch.Tensor:
        """float64 [d_sae]: mean pooled activation over samples with y > 0 where the feature is active (z > 0)."""
        return self.sum_z_active_pos / self.n_active_pos.clamp(min=1)

    # ---- persistence ----
    def state_dict(self) -> dict:
        """Flat dict of contiguous float64 tensors, ready for safetensors.torch.save_file."""
        out = {name: self.features[i].clone() for i, name in enumerate(FEATURE_FIELDS)}
        out.update({name: self.scalars[i:i + 1].clone() for i, name in enumerate(SCALAR_FIELDS)})
        return out

    def load_state_dict(self, state: dict) -> "CorrStats":
        """Replace the statistics with `state` (validated whole before anything is written)."""
        missing = [k for k in FEATURE_FIELDS + SCALAR_FIELDS if k not in state]
        if missing:
            raise KeyError(f"CorrStats state is missing {missing}")
        for name in FEATURE_FIELDS:
            if tuple(state[name].shape) != (self.d_sae,):
                raise ValueError(f"state[{name!r}] has shape {tuple(state[name].shape)}, expected ({self.d_sae},)")
        for name in SCALAR_FIELDS:
            if state[name].numel() != 1:
                raise ValueError(f"state[{name!r}] must hold one value, got shape {tuple(state[name].shape)}")
        self.features.copy_(torch.stack([state[name].to(self.features) for name in FEATURE_FIELDS]))
        self.scalars.copy_(torch.stack([state[name].reshape(()).to(self.scalars) for name in SCALAR_FIELDS]))
        return self

    @classmethod
    def from_state_dict(cls, state: dict, device=None) -> "CorrStats":
        return cls(state["sum_z"].shape[0], device=device).load_state_dict(state)


def _field(group: str, i: int, name: str) -> property:
    return property(lambda self: getattr(self, group)[i], doc=f"{name}: a view of {group}[{i}]")


for _i, _name in enumerate(FEATURE_FIELDS):
    setattr(CorrStats, _name, _field("features", _i, _name))
for _i, _name in enumerate(SCALAR_FIELDS):
    setattr(CorrStats, _name, _field("scalars", _i, _name))
