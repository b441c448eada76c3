"""The steering plans a run tests: the variants S / A / P / N from their picks, and the controls
(control-random-feature-1 ... -R, control-shuffled-outcome)."""
from __future__ import annotations

from corrsteer.method.rank import negative_candidates, shuffled_candidates
from corrsteer.method.variants import random_feature_picks, variant_a, variant_n, variant_s
from corrsteer.pipeline.collect import Collected
from corrsteer.pipeline.prefix import PrefixSearch
from corrsteer.pipeline.runner import Context
from corrsteer.pipeline.validate import draw_seed


def variant_picks(ctx: Context, cands: dict, prefix: PrefixSearch | None, col: Collected | None = None) -> dict:
    """{variant: picks}; N steers away from the most negatively correlated feature of each layer P keeps (every
    layer when P is not run)."""
    def negative():
        layers = [p.layer for p in prefix.picks] if prefix is not None else list(col.sae)
        return variant_n(negative_candidates(col.sae, layers, ctx.ranking, ctx.cfg.scale, col.by_class))

    pickers = {"S": lambda: variant_s(cands), "A": lambda: variant_a(cands), "P": lambda: prefix.picks, "N": negative}
    return {n: pickers[n]() for n in ctx.cfg.variants}


def build_plans(ctx: Context, picks: dict) -> dict:
    return {n: ctx.plan(f"CorrSteer-{n}", p, ctx.cfg.all_positions) for n, p in picks.items()}


def control_plans(ctx: Context, col: Collected, plans: dict, shuffled: PrefixSearch | None = None) -> dict:
    """The controls, as {name: SteeringPlan}: control-random-feature-1 ... -R (--random-draws; the layers of P, or
    of the first variant built, with random features of the same vector norms, draw i seeded by --seed and i) and
    control-shuffled-outcome: P's whole procedure (ranking, validation, filter, prefix search: `shuffled`, from
    prefix_stage) on the scores permuted within class and batch; without P, every layer's top feature."""
    ref = next((plans[n] for n in ("P", "A", "S", "N") if n in plans), None)
    out = {}
    if ref is not None:
        for d in range(ctx.cfg.random_draws):
            name = f"control-random-feature-{d + 1}"
            picks = random_feature_picks(ref, ctx.bank, draw_seed(ctx.cfg.seed, d), col.sae)
            out[name] = ctx.plan(name, picks, ctx.cfg.all_positions)
    picks = shuffled.picks if shuffled is not None else variant_a(
        shuffled_candidates(col, ctx.ranking, ctx.cfg.coef, ctx.cfg.scale))
    out["control-shuffled-outcome"] = ctx.plan("control-shuffled-outcome", picks, ctx.cfg.all_positions)
    return out
