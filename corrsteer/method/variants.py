"""Selection from the ranked candidates (corrsteer.method.rank): variants S, A, P, and the no-SAE baselines.

S = the single best feature over all layers (by the ranking's score); A = every layer's top feature together;
P = those layers' features that beat the unsteered baseline alone on the validation split, together — taken as the
best-validated prefix of them ranked by validation score (see p_prefixes); N = steering away from each layer's
most negatively correlated feature (rank.negative_candidates). The random-feature control keeps a plan's layers and
vector norms with random features.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from corrsteer.method.rank import Candidate


def variant_s(cands: dict[int, list[Candidate]]) -> list[Candidate]:
    """The one feature with the best score over all layers."""
    if not cands:
        return []
    L = max(cands, key=lambda L: cands[L][0].score)
    return [cands[L][0]]


def variant_a(cands: dict[int, list[Candidate]]) -> list[Candidate]:
    """Every layer's top feature, in layer order."""
    return [top[0] for _, top in sorted(cands.items())]


def variant_p(cands: dict[int, list[Candidate]], val_acc: dict, base_acc: float,
              random: dict | None = None) -> list[Candidate]:
    """Keep each layer's feature whose validation score alone beats the baseline's (random given: and the mean
    score of the random features drawn at its layer, {layer: score})."""
    return [replace(top[0], val_acc=val_acc[L]) for L, top in sorted(cands.items())
            if val_acc.get(L, -1.0) > base_acc and (random is None or val_acc[L] > random.get(L, float("inf")))]


def variant_n(neg: dict[int, Candidate]) -> list[Candidate]:
    """The negative candidates (negative coefficients), in layer order."""
    return [neg[L] for L in sorted(neg)]


def random_feature_picks(plan, bank, seed: int, stats: dict | None = None) -> list[Candidate]:
    """The random-feature control of a SteeringPlan: per entry, one feature drawn uniformly (seeded, entries in
    order) among the SAE's other features, its coefficient such that the vector has the norm of the plan's vector
    at that layer. r and freq are the drawn feature's where `stats` ({layer: CorrStats}) is given, else 0."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for e in plan.entries:
        W_dec = bank[e.layer].sae.W_dec
        target = float(torch.tensor(plan.vectors[e.hook], dtype=torch.float64).norm())
        norms = W_dec.double().norm(dim=1).cpu()
        allowed = norms > 0
        allowed[list(e.features)] = False
        pool = allowed.nonzero().squeeze(1)
        if not len(pool):
            continue
        j = int(pool[torch.randint(len(pool), (1,), generator=g)])
        st = stats[e.layer] if stats else None
        r = float(st.pearson()[j]) if st else 0.0
        freq = float(st.n_active[j]) / max(float(st.n), 1.0) if st else 0.0
        out.append(Candidate(layer=e.layer, feature=j, r=r, score=r, freq=freq, coef=target / float(norms[j])))
    return out


def p_prefixes(kept: list[Candidate]) -> list[list[Candidate]]:
    """Steering vectors added at several layers accumulate in the residual stream, so all kept features together can
    overshoot even when each helps alone. Candidates for the final P: the kept features ranked by validation
    score, as prefixes of growing length (the full set is the last); the prefix stage validates them and keeps the
    best."""
    ranked = sorted(kept, key=lambda p: -p.val_acc)
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
