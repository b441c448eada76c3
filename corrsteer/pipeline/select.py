"""Selection: per layer the top positively correlated SAE feature and its coefficient; variants S, A, P.

coefficient = mean pooled activation over correct samples (coef="mean"), or over correct samples where the feature is
active (coef="active"); times `scale`. S = the single best feature over all layers; A = every layer's top feature
together; P = those layers' features that beat the unsteered baseline alone on the validation split, together —
taken as the best-validated prefix of them ranked by validation accuracy (see p_prefixes).
"""
from __future__ import annotations

import torch


def top_features(stats, k: int = 5, coef: str = "mean", scale: float = 1.0) -> list[dict]:
    """The k features with the highest positive r: [{"feature", "r", "freq", "coef"}], best first."""
    if coef not in ("mean", "active"):
        raise ValueError(f"coef must be 'mean' or 'active', got {coef!r}")
    r = stats.pearson()
    n = float(stats.n)
    top = torch.topk(r, min(k, r.numel()))
    c = stats.mean_given_positive() if coef == "mean" else stats.mean_active_given_positive()
    out = []
    for val, j in zip(top.values.tolist(), top.indices.tolist()):
        if val <= 0:
            break
        out.append(dict(feature=j, r=val, freq=float(stats.n_active[j]) / max(n, 1.0), coef=float(c[j]) * scale))
    return out


def layer_candidates(stats_by_layer: dict, k: int = 5, coef: str = "mean", scale: float = 1.0) -> dict:
    """{layer: top-k list}; layers with no positively correlated feature are left out."""
    out = {}
    for L, st in stats_by_layer.items():
        top = top_features(st, k, coef, scale)
        if top and top[0]["coef"] > 0:
            out[L] = top
    return out


def variant_s(cands: dict) -> list[dict]:
    if not cands:
        return []
    L = max(cands, key=lambda L: cands[L][0].get("score", cands[L][0]["r"]))   # the ranking's score
    return [dict(layer=L, **cands[L][0])]


def variant_a(cands: dict) -> list[dict]:
    return [dict(layer=L, **top[0]) for L, top in sorted(cands.items())]


def variant_p(cands: dict, val_acc: dict, base_acc: float) -> list[dict]:
    """Keep each layer's feature whose validation accuracy alone beats the baseline's."""
    return [dict(layer=L, val_acc=val_acc[L], **top[0]) for L, top in sorted(cands.items())
            if val_acc.get(L, -1.0) > base_acc]


def p_prefixes(kept: list[dict]) -> list[list[dict]]:
    """Steering vectors added at several layers accumulate in the residual stream, so all kept features together can
    overshoot even when each helps alone. Candidates for the final P: the kept features ranked by validation
    accuracy, as prefixes of growing length (the full set is the last); run.py validates them and keeps the best."""
    ranked = sorted(kept, key=lambda p: -p["val_acc"])
    return [ranked[:i] for i in range(1, len(ranked) + 1)]


def raw_direction(raw_stats: dict, layer: int, scale: float = 1.0) -> tuple[int, torch.Tensor]:
    """Raw-residual correlation baseline: the residual dimension with the highest r at `layer`, as a vector
    e_dim * (mean pooled value over correct samples)."""
    st = raw_stats[layer]
    r = st.pearson()
    j = int(r.argmax())
    v = torch.zeros(st.d_sae)
    v[j] = float(st.mean_given_positive()[j]) * scale
    return j, v


def mean_difference(raw_stats: dict, layer: int, scale: float = 1.0) -> torch.Tensor:
    """Mean-difference baseline: mean pooled residual of correct minus incorrect samples at `layer`."""
    st = raw_stats[layer]
    n, n_pos = float(st.n), float(st.n_pos)
    if n_pos == 0 or n_pos == n:
        return torch.zeros(st.d_sae)
    mean_pos = st.sum_z_pos / n_pos
    mean_neg = (st.sum_z - st.sum_z_pos) / (n - n_pos)
    return ((mean_pos - mean_neg) * scale).float()
