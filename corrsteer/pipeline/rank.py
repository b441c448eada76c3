"""Feature rankings: CorrSteer's Pearson r and the paper's comparison rows (SPARE-style MI, DSG-style Fisher ratio,
CAA mean difference), all from the one collection pass.

Which path computes what:
  - pearson: the fused `encode_pool_stats` (SAE encode + pool + CorrStats sums in one kernel, nothing [B, d_sae]
    materialised), as before;
  - mi / fisher / caa: `encode_pool` (the same fused encode + pool, on every backend) returns pooled [B, d_sae] per
    batch, and RankStats.update folds it into CorrStats' sums plus sum_z2_pos and the 2 x 23 bin histogram
    (corrsteer_kernels.rank_stats); memory is bounded by the batch.
Selection keeps, per layer, the top-k features by the ranking's score among those that favour correct answers
(RankStats.favours_correct); every candidate also carries its Pearson r for the report.
"""
from __future__ import annotations

import torch

from corrsteer_kernels import CorrStats, RankStats, encode_pool, encode_pool_stats


def make_stats(ranking: str, d_sae: int, device) -> CorrStats:
    """The statistics object a ranking needs: CorrStats for pearson (fused path), RankStats otherwise."""
    return CorrStats(d_sae, device=device) if ranking == "pearson" else RankStats(d_sae, device=device)


def feed(h: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor, sae, stats: CorrStats, pool: str) -> None:
    """Add one batch's captured residuals h [B, T, d] (scores y [B]) to `stats`, on the path its type asks for."""
    if isinstance(stats, RankStats):
        stats.update(encode_pool(h, lengths, sae, pool), y)
    else:
        encode_pool_stats(h, lengths, y, sae, stats, pool=pool)


def ranked_features(stats: CorrStats, ranking: str, k: int = 5, coef: str = "mean", scale: float = 1.0) -> list[dict]:
    """The k features with the highest score that favour correct answers: [{"feature", "r", "score", "freq",
    "coef"}], best first ("r" is always Pearson's)."""
    from corrsteer.pipeline.select import top_features

    if ranking == "pearson":
        return [dict(f, score=f["r"]) for f in top_features(stats, k, coef, scale)]
    if not isinstance(stats, RankStats):
        raise TypeError(f"ranking {ranking!r} needs RankStats (collect with ranking={ranking!r})")
    score = stats.score(ranking)
    score = torch.where(stats.favours_correct(ranking), score, torch.full_like(score, -torch.inf))
    top = torch.topk(score, min(k, score.numel()))
    r = stats.pearson()
    c = stats.mean_given_positive() if coef == "mean" else stats.mean_active_given_positive()
    n = max(float(stats.n), 1.0)
    out = []
    for val, j in zip(top.values.tolist(), top.indices.tolist()):
        if val == -float("inf"):
            break
        out.append(dict(feature=j, r=float(r[j]), score=val, freq=float(stats.n_active[j]) / n,
                        coef=float(c[j]) * scale))
    return out


def layer_candidates(stats_by_layer: dict, ranking: str = "pearson", k: int = 5, coef: str = "mean",
                     scale: float = 1.0) -> dict:
    """{layer: ranked list}; layers with no feature favouring correct answers (or a zero coefficient) left out."""
    out = {}
    for L, st in stats_by_layer.items():
        top = ranked_features(st, ranking, k, coef, scale)
        if top and top[0]["coef"] > 0:
            out[L] = top
    return out
