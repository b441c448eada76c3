"""CorrStats: mergeable float64 sufficient statistics for Pearson r between pooled features z and a score y.

Per run:      n, sum_y, sum_y2, n_pos (samples with y > 0)
Per feature:  shift c (float64, fp32-representable), and sums relative to it:
              sum_dz = sum (z - c), sum_dz2 = sum (z - c)^2, sum_dzy = sum (z - c) y;
              raw: sum_z_pos (sum of z over y > 0), n_active (z > 0), n_active_pos (z > 0 and y > 0),
              sum_z_active_pos (sum of z over z > 0 and y > 0)

Why shifted: var = n sum z^2 - (sum z)^2 cancels catastrophically when a feature varies little relative to its mean
(relative error ~ eps (mean/sd)^2: with fp32 per-tile sums, eps = 2^-24, a feature with mean/sd = 1000 keeps no
digit). Sums of z - c with c near the mean are well conditioned, so the kernels' fp32 per-tile sums keep ~7 digits of
the variance, and pearson() reads the centred moments directly: n sum_dz2 - sum_dz^2 only loses ~((mean - c)/sd)^2.

c is set per feature by the first sums added (a batch's or block's mean, rounded to fp32) and never moves while
stats are only added; every producer (kernel tile, torch block) sums relative to its own shift and the fold into the
stats' shift is exact algebra in float64 (rebase):
    sum (z - T)   = sum (z - c) + n d,   sum (z - T)^2 = sum (z - c)^2 + 2 d sum (z - c) + n d^2,
    sum (z - T) y = sum (z - c) y + d sum y,   d = c - T.
merge rebases the other side onto this side's shift the same way, in a fixed order (deterministic).
y is not shifted (scores are mostly 0/1); raw sums of z (sum_z, sum_z2, sum_zy) are derived in float64 for readers
that need means.
"""
from __future__ import annotations

import torch

from ._common import check_finite, check_float

# The one definition of the fields: their order is the row order of CorrStats.features / .scalars, of
# feature_sums / scalar_sums and of the kernels' partial sums; CorrStats reads each by name (stats.sum_z_pos).
FEATURE_FIELDS = ("sum_dz", "sum_dz2", "sum_dzy", "sum_z_pos", "n_active", "n_active_pos", "sum_z_active_pos")
SCALAR_FIELDS = ("n", "sum_y", "sum_y2", "n_pos")
# a kernel tile's (or torch block's) rows: FEATURE_FIELDS relative to the tile's own shift, then that shift, the
# number of samples and their sum of y (the last two the same for every feature of a tile)
PART_FIELDS = FEATURE_FIELDS + ("shift", "count", "sum_y")
STATE_FORMAT = 2              # state_dict()["format"]: 2 = shifted sums (format 1 had raw sums, no "format" key)


def rebase(sums: torch.Tensor, shift: torch.Tensor, count, sum_y, target: torch.Tensor) -> torch.Tensor:
    """float64 [..., len(FEATURE_FIELDS), F]: sums (rows relative to `shift` [..., F]) made relative to `target` [F];
    count and sum_y: the samples behind the sums and their sum of y (broadcastable to shift)."""
    d = shift.double() - target
    s1, s2, s12 = sums[..., 0, :], sums[..., 1, :], sums[..., 2, :]
    moved = torch.stack([s1 + count * d, s2 + d * (2 * s1 + count * d), s12 + d * sum_y], dim=-2)
    return torch.cat([moved, sums[..., 3:, :]], dim=-2)


def fold_parts(part: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """float64 [len(FEATURE_FIELDS), F]: the kernel tiles' sums part [n_tiles, len(PART_FIELDS), F] folded onto the
    shift `target` [F], added in tile order (deterministic)."""
    nf = len(FEATURE_FIELDS)
    return rebase(part[:, :nf], part[:, nf], part[:, nf + 1], part[:, nf + 2], target).sum(0)


def zero_sums(count, sum_y, shift: torch.Tensor) -> torch.Tensor:
    """float64 [len(FEATURE_FIELDS), F]: the sums of `count` samples pooled to 0 (empty samples, which no kernel tile
    sees) with scores summing to sum_y, relative to shift [F]: -count c, count c^2, -sum_y c; the rest 0."""
    c = shift.double()
    moved = torch.stack([-count * c, count * c * c, -sum_y * c])
    return torch.cat([moved, moved.new_zeros(len(FEATURE_FIELDS) - 3, c.shape[0])])


def parts_shift(part: torch.Tensor) -> torch.Tensor:
    """float64 [F]: a shift for the tiles' samples: the tile shifts' mean weighted by their counts (0 without any)."""
    nf = len(FEATURE_FIELDS)
    n = part[:, nf + 1]
    return (part[:, nf] * n).sum(0) / n.sum(0).clamp(min=1)


def as_shift(c: torch.Tensor) -> torch.Tensor:
    """A shift as stored: float64, rounded to fp32 (the kernels and fp32 torch blocks subtract it exactly)."""
    return c.float().double()


def feature_sums(z: torch.Tensor, y: torch.Tensor, shift: torch.Tensor | None = None, nonneg: bool = False,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """float64 [7, F]: the per-feature sums (FEATURE_FIELDS order) of pooled z [B, F] against y [B], the first
    three relative to `shift` [F] (0 when None). valid [B] bool: only those rows count (default all).

    nonneg=True (pooled SAE activations, never negative) takes sum_z_active_pos = sum_z_pos, one pass fewer."""
    z = z.double()
    y = y.double()
    ones = torch.ones_like(y) if valid is None else valid.double()
    y = y * ones
    pos = (y > 0).double() * ones
    active = (z > 0).double() * ones[:, None]
    dz = (z if shift is None else z - shift.to(z)) * ones[:, None]
    lin = torch.stack([ones, y]) @ dz                          # sum_dz, sum_dzy
    zp = pos @ z                                               # sum_z_pos
    cnt = torch.stack([ones, pos]) @ active                    # n_active, n_active_pos
    zap = zp if nonneg else pos @ (z * active)
    return torch.stack([lin[0], torch.linalg.vecdot(dz, dz, dim=0), lin[1], zp, cnt[0], cnt[1], zap])


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


def column_mean(z: torch.Tensor) -> torch.Tensor:
    """float64 [F]: the mean of z [B, F] over its rows (0 for B = 0): a shift proposal."""
    return z.double().sum(0) / max(z.shape[0], 1)


class CorrStats:
    """Streaming Pearson statistics over d_sae features: float64 accumulators of shifted sums (module docstring).

    update(pooled [B, d_sae], y [B]); merge(other); pearson() -> [d_sae];
    mean_given_positive(); mean_active_given_positive(); state_dict() / load_state_dict().
    Every field is a named view: stats.sum_z_pos ([d_sae], FEATURE_FIELDS), stats.n_pos (0-d, SCALAR_FIELDS);
    stats.sum_z / sum_z2 / sum_zy are the raw sums, derived in float64.
    """

    def __init__(self, d_sae: int, device=None):
        if int(d_sae) != d_sae or d_sae < 1:
            raise ValueError(f"d_sae must be a positive integer, got {d_sae!r}")
        self.d_sae = int(d_sae)
        self.features = torch.zeros(len(FEATURE_FIELDS), self.d_sae, dtype=torch.float64, device=device)
        self.scalars = torch.zeros(len(SCALAR_FIELDS), dtype=torch.float64, device=device)
        self.shift = torch.zeros(self.d_sae, dtype=torch.float64, device=device)
        self.has_shift = torch.zeros(self.d_sae, dtype=torch.bool, device=device)
        self._all_shifted = False          # host-side: every column has its shift (no proposal needed)

    @property
    def device(self) -> torch.device:
        return self.features.device

    def __repr__(self):
        return f"CorrStats(d_sae={self.d_sae}, n={int(self.n)}, n_pos={int(self.n_pos)})"

    # ---- raw sums, derived ----
    @property
    def sum_z(self) -> torch.Tensor:
        return self.sum_dz + self.n * self.shift

    @property
    def sum_z2(self) -> torch.Tensor:
        return self.sum_dz2 + self.shift * (2 * self.sum_dz + self.n * self.shift)

    @property
    def sum_zy(self) -> torch.Tensor:
        return self.sum_dzy + self.shift * self.sum_y

    def clear(self) -> "CorrStats":
        """In place: back to no statistics (and no shift)."""
        for t in (self.features, self.scalars, self.shift, self.has_shift):
            t.zero_()
        self._all_shifted = False
        return self

    # ---- accumulation ----
    def shift_for(self, cols, proposal) -> torch.Tensor:
        """float64 [n_cols]: the shift that sums added for columns `cols` must be relative to: the stats' own where
        set, else as_shift(proposal()) (a callable, evaluated only while some column lacks one), adopted. No host
        sync."""
        if self._all_shifted:
            return self.shift[cols]
        c = torch.where(self.has_shift[cols], self.shift[cols], as_shift(proposal().to(self.device)))
        self.shift[cols] = c
        self.has_shift[cols] = True
        self._all_shifted = cols == slice(None)
        return c

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
        z = pooled.to(self.device)
        self.add_feature_sums(slice(None), feature_sums(z, y, self.shift_for(slice(None), lambda: column_mean(z))))
        self.add_scalar_sums(y)
        return self

    def add_feature_sums(self, cols, sums: torch.Tensor) -> None:
        """Add precomputed float64 sums [7, n_cols] (FEATURE_FIELDS order, relative to shift_for(cols, ...)) for
        dictionary columns `cols`."""
        self.features[:, cols] += sums

    def add_scalar_sums(self, y: torch.Tensor) -> None:
        self.scalars += scalar_sums(y)

    def merge(self, other: "CorrStats") -> "CorrStats":
        """In place: self becomes the statistics of both streams (other's sums rebased onto self's shift where self
        has one). Returns self."""
        if not isinstance(other, CorrStats) or other.d_sae != self.d_sae:
            raise ValueError("can only merge CorrStats of the same d_sae")
        o_shift, o_has = other.shift.to(self.device), other.has_shift.to(self.device)
        o_sc = other.scalars.to(self.device)
        target = torch.where(self.has_shift, self.shift, o_shift)
        self.features += rebase(other.features.to(self.device), o_shift, o_sc[0], o_sc[1], target)
        self.scalars += o_sc
        self.shift.copy_(target)
        self.has_shift |= o_has
        self._all_shifted = self._all_shifted or other._all_shifted
        return self

    def rebase_to(self, target: torch.Tensor) -> "CorrStats":
        """In place: the same statistics, relative to the shift as_shift(target) [d_sae]."""
        target = as_shift(target.to(self.device))
        self.features.copy_(rebase(self.features, self.shift, self.n, self.sum_y, target))
        self.shift.copy_(target)
        return self

    def sums_at(self, shift: torch.Tensor) -> torch.Tensor:
        """float64 [7, d_sae]: the feature sums relative to `shift` [d_sae] instead of self.shift (to compare
        statistics accumulated under different shifts)."""
        return rebase(self.features, self.shift, self.n, self.sum_y, shift.to(self.device).double())

    # ---- results ----
    def pearson(self) -> torch.Tensor:
        """float64 [d_sae]: Pearson r of each feature with y from the shifted sums; 0 where either variance is 0
        (never NaN)."""
        n, sy, syy = self.n, self.sum_y, self.sum_y2
        sz, szz, szy = self.sum_dz, self.sum_dz2, self.sum_dzy
        cov = n * szy - sz * sy
        var_z = n * szz - sz * sz
        var_y = n * syy - sy * sy
        # treat variance lost to cancellation (relative to the shifted second moment) as zero
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
        """Flat dict of contiguous float64 tensors, ready for safetensors.torch.save_file (format STATE_FORMAT)."""
        out = {name: self.features[i].clone() for i, name in enumerate(FEATURE_FIELDS)}
        out.update({name: self.scalars[i:i + 1].clone() for i, name in enumerate(SCALAR_FIELDS)})
        out["shift"] = self.shift.clone()
        out["format"] = torch.tensor([float(STATE_FORMAT)], dtype=torch.float64)
        return out

    def load_state_dict(self, state: dict) -> "CorrStats":
        """Replace the statistics with `state` (validated whole before anything is written). A format-1 state (raw
        sums sum_z / sum_z2 / sum_zy, no "format" key) is converted: its sums are shifted sums with shift 0, rebased
        onto their mean."""
        state = upgrade_state(state)
        missing = [k for k in FEATURE_FIELDS + SCALAR_FIELDS + ("shift",) if k not in state]
        if missing:
            raise KeyError(f"CorrStats state is missing {missing}")
        for name in FEATURE_FIELDS + ("shift",):
            if tuple(state[name].shape) != (self.d_sae,):
                raise ValueError(f"state[{name!r}] has shape {tuple(state[name].shape)}, expected ({self.d_sae},)")
        for name in SCALAR_FIELDS:
            if state[name].numel() != 1:
                raise ValueError(f"state[{name!r}] must hold one value, got shape {tuple(state[name].shape)}")
        self.features.copy_(torch.stack([state[name].to(self.features) for name in FEATURE_FIELDS]))
        self.scalars.copy_(torch.stack([state[name].reshape(()).to(self.scalars) for name in SCALAR_FIELDS]))
        self.shift.copy_(state["shift"].to(self.shift))
        self.has_shift.fill_(True)
        self._all_shifted = True
        if state.get("format") is None:                     # converted format 1: move the shift to the mean
            self.rebase_to(self.sum_z / self.n.clamp(min=1))
        return self

    @classmethod
    def from_state_dict(cls, state: dict, device=None) -> "CorrStats":
        return cls(upgrade_state(state)["sum_dz"].shape[0], device=device).load_state_dict(state)


def upgrade_state(state: dict) -> dict:
    """state in format STATE_FORMAT: a format-1 state (raw sums) renamed with shift 0 and no "format" key (the
    caller rebases it); any other format refused in one line."""
    if "format" in state:
        fmt = float(state["format"].reshape(-1)[0]) if state["format"].numel() == 1 else None
        if fmt != STATE_FORMAT:
            raise ValueError(f"CorrStats state has format {fmt}, this version reads {STATE_FORMAT} (and format 1)")
        return state
    if "sum_z" not in state:
        return state                    # missing keys reported by the caller
    old = {"sum_z": "sum_dz", "sum_z2": "sum_dz2", "sum_zy": "sum_dzy"}
    out = {old.get(k, k): v for k, v in state.items() if k not in old.values()}
    out["shift"] = torch.zeros_like(state["sum_z"], dtype=torch.float64)
    out["format"] = None
    return out


def _field(group: str, i: int, name: str) -> property:
    return property(lambda self: getattr(self, group)[i], doc=f"{name}: a view of {group}[{i}]")


for _i, _name in enumerate(FEATURE_FIELDS):
    setattr(CorrStats, _name, _field("features", _i, _name))
for _i, _name in enumerate(SCALAR_FIELDS):
    setattr(CorrStats, _name, _field("scalars", _i, _name))
