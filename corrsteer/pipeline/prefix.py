"""Prefix search (CorrSteer-P): the kept layers' features validated together as growing prefixes, by validation
score; the best prefix wins (--p-combine all: every kept layer together, the paper). The shuffled-outcome control's
kept features go through the same search in the same batches."""
from __future__ import annotations

from dataclasses import dataclass, field

from corrsteer.method.rank import Candidate
from corrsteer.method.variants import p_prefixes, variant_p
from corrsteer.pipeline.runner import Context
from corrsteer.pipeline.validate import Validation


@dataclass
class PrefixSearch:
    picks: list[Candidate]                                # the chosen prefix of P's features
    accuracy: list = field(default_factory=list)          # validation score (Context.measure) of each prefix


def kept_layers(ctx: Context, cands: dict, scores: dict, random: dict, baseline: float) -> list[Candidate]:
    """P's filter: each layer's feature that beats the baseline alone on validation (--p-filter random: and the
    mean of the random features drawn at its layer)."""
    return variant_p(cands, scores, baseline, random if ctx.cfg.p_filter == "random" else None)


def prefix_stage(ctx: Context, cands: dict, val_items, val: Validation,
                 shuffled: dict | None = None) -> tuple[PrefixSearch, PrefixSearch | None]:
    """P's kept features validated together as growing prefixes (by validation score); the best prefix wins. The
    shuffled-outcome control's kept features (shuffled given) go through the same search in the same batches:
    (P's search, the control's)."""
    arms = {"P": kept_layers(ctx, cands, val.per_layer, val.random, val.baseline)}
    if shuffled is not None:
        arms["S"] = kept_layers(ctx, shuffled, val.shuffled, val.shuffled_random, val.baseline)
    search = {a: p_prefixes(k) for a, k in arms.items() if len(k) > 1 and ctx.cfg.p_combine != "all"}
    plans = {f"{a}{i + 1}": ctx.plan("p", pre[i]).hook_vectors(ctx.lm.device)
             for a, pre in search.items() for i in range(1, len(pre))}
    rows = ctx.generate(val_items, plans, "prefix") if plans else {}
    out = {a: PrefixSearch(picks=k) for a, k in arms.items()}    # the paper (--p-combine all), or one layer or none
    for a, pre in search.items():
        acc = [pre[0][0].val_acc] + [ctx.measure(rows[f"{a}{i + 1}"]) for i in range(1, len(pre))]
        best = max(range(len(pre)), key=lambda i: (acc[i], -i))
        out[a] = PrefixSearch(picks=pre[best], accuracy=acc)
    return out["P"], out.get("S")
