"""Feature rankings, one module: CorrSteer's Pearson r and the paper's comparison rows (SPARE-style MI, DSG-style
Fisher ratio, CAA mean difference), all from the one collection pass, as typed candidates per layer.

Which path computes what:
  - pearson: the fused `encode_pool_stats` (SAE encode + pool + CorrStats sums in one kernel, nothing [B, d_sae]
    materialised);
  - mi / fisher / caa: `encode_pool` (the same fused encode + pool, on every backend) returns pooled [B, d_sae] per
    batch, and RankStats.update folds it into CorrStats' sums plus sum_z2_pos and the 2 x 23 bin histogram
    (corrsteer_kernels.rank_stats); memory is bounded by the batch.
Per layer the top-k features by the ranking's score among those that favour correct answers (Pearson: r > 0;
RankStats.favours_correct otherwise); every candidate also carries its Pearson r for the report.

coefficient = mean pooled activation over correct samples (coef="mean"), or over correct samples where the feature
is active (coef="active"); times `scale`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from corrsteer_kernels import CorrStats, RankStats, encode_pool, encode_pool_stats

COEFS = ("mean", "active")


@dataclass(frozen=True)
class Candidate:
    """One SAE feature of one layer as a ranking scored it; val_acc is filled in by CorrSteer-P's validation."""
    layer: int
    feature: int
    r: float                      # Pearson r between pooled activation and the score, whatever the ranking
    score: float                  # the ranking's score (r itself for pearson)
    freq: float                   # share of samples where the feature was active
    coef: float                   # steering coefficient (times scale)
    val_acc: float | None = None  # validation accuracy of this feature alone (CorrSteer-P)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def make_stats(ranking: str, d_sae: int, device) -> CorrStats:
    """The statistics object a ranking needs: CorrStats for pearson (fused path), RankStats otherwise."""
    return CorrStats(d_sae, device=device) if ranking == "pearson" else RankStats(d_sae, device=device)


def feed(h: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor, sae, stats: CorrStats, pool: str) -> None:
    """Add one batch's captured residuals h [B, T, d] (scores y [B]) to `stats`, on the path its type asks for."""
    if isinstance(stats, RankStats):
        stats.update(encode_pool(h, lengths, sae, pool), y)
    else:
        encode_pool_stats(h, lengths, y, sae, stats, pool=pool)


def _score(stats: CorrStats, ranking: str) -> torch.Tensor:
    """[d_sae] scores, -inf where a feature does not favour correct answers."""
    if ranking == "pearson":
        r = stats.pearson()
        return torch.where(r > 0, r, torch.full_like(r, -torch.inf))
    if not isinstance(stats, RankStats):
        raise TypeError(f"ranking {ranking!r} needs RankStats (collect with ranking={ranking!r})")
    score = stats.score(ranking)
    return torch.where(stats.favours_correct(ranking), score, torch.full_like(score, -torch.inf))


def ranked_features(stats: CorrStats, ranking: str = "pearson", k: int = 5, coef: str = "mean", scale: float = 1.0,
                    layer: int = -1) -> list[Candidate]:
    """The k features of `layer` with the highest score that favour correct answers, best first."""
    if coef not in COEFS:
        raise ValueError(f"coef must be 'mean' or 'active', got {coef!r}")
    score = _score(stats, ranking)
    top = torch.topk(score, min(k, score.numel()))
    r = stats.pearson()
    c = stats.mean_given_positive() if coef == "mean" else stats.mean_active_given_positive()
    n = max(float(stats.n), 1.0)
    out = []
    for val, j in zip(top.values.tolist(), top.indices.tolist()):
        if val == -float("inf"):
            break
        out.append(Candidate(layer=layer, feature=j, r=float(r[j]), score=val,
                             freq=float(stats.n_active[j]) / n, coef=float(c[j]) * scale))
    return out


def layer_candidates(stats_by_layer: dict, ranking: str = "pearson", k: int = 5, coef: str = "mean",
                     scale: float = 1.0) -> dict[int, list[Candidate]]:
    """{layer: ranked candidates}; layers with no feature favouring correct answers (or a zero coefficient) are
    left out."""
    out = {}
    for L, st in stats_by_layer.items():
        top = ranked_features(st, ranking, k, coef, scale, layer=L)
        if top and top[0].coef > 0:
            out[L] = top
    return out
