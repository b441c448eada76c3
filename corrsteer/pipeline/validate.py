"""Validation (CorrSteer-P's filter): every layer's best feature alone, and the unsteered baseline, on the validation
split; with --p-filter random, norm-matched random features at the layers that beat it. The shuffled-outcome
control's features go through the same validation in the same batches."""
from __future__ import annotations

from dataclasses import dataclass, field

from corrsteer.method.variants import random_feature_picks
from corrsteer.pipeline.runner import Context


@dataclass
class Validation:
    """Validation scores: balanced accuracy where the task has classes (Context.measure), else accuracy. P's
    candidates and the shuffled-outcome control's go through the same validation (shuffled, shuffled_random)."""
    baseline: float = float("nan")
    per_layer: dict = field(default_factory=dict)        # {layer: score of its feature alone}
    random: dict = field(default_factory=dict)           # {layer: mean score of --val-draws random features there}
    shuffled: dict = field(default_factory=dict)         # {layer: score of the shuffled control's feature alone}
    shuffled_random: dict = field(default_factory=dict)  # {layer: random features normed like that feature}

    def to_dict(self) -> dict:
        return dict(baseline=self.baseline, per_layer=self.per_layer, random_per_layer=self.random,
                    shuffled_per_layer=self.shuffled, shuffled_random_per_layer=self.shuffled_random)


def validate_stage(ctx: Context, cands: dict, val, shuffled: dict | None = None) -> Validation:
    """Every layer's best feature alone, and the unsteered baseline, on the validation split (CorrSteer-P only),
    scored by Context.measure (balanced accuracy where the task has classes: a layer that only pushes one class
    does not beat the baseline); the shuffled-outcome control's features in the same batches. With --p-filter
    random, then norm-matched random features at the layers that beat the baseline (random_stage)."""
    if "P" not in ctx.cfg.variants:
        return Validation()
    shuffled = shuffled or {}
    plans = {"baseline": {}} | {f"L{L}": ctx.plan(f"L{L}", [cands[L][0]]).hook_vectors(
        ctx.lm.device) for L in cands}
    plans |= {f"S{L}": ctx.plan(f"S{L}", [shuffled[L][0]]).hook_vectors(ctx.lm.device) for L in shuffled}
    rows = ctx.generate(val, plans, "validate")
    v = Validation(baseline=ctx.measure(rows["baseline"]), per_layer={L: ctx.measure(rows[f"L{L}"]) for L in cands},
                   shuffled={L: ctx.measure(rows[f"S{L}"]) for L in shuffled})
    if ctx.cfg.p_filter == "random":
        random_stage(ctx, cands, shuffled, val, v)
    return v


def draw_seed(seed: int, draw: int, stage: int = 0) -> int:
    """The seed of random-feature draw `draw` (0-based) of a run seeded `seed`; stage 0: the test controls (draw 0
    is the one control of runs before several were drawn), 1: validation."""
    return seed + 1_000_003 * draw + 7_000_003 * stage


def random_stage(ctx: Context, cands: dict, shuffled: dict, val_items, v: Validation) -> None:
    """--val-draws norm-matched random features at every layer whose feature beat the baseline on validation (P's
    and the shuffled control's), in shared batches; their mean score per layer goes to v.random / v.shuffled_random."""
    arms = (("L", cands, v.per_layer, v.random), ("S", shuffled, v.shuffled, v.shuffled_random))
    plans = {}
    for tag, cs, scores, _ in arms:
        for L in (L for L in cs if scores[L] > v.baseline):
            ref = ctx.plan(f"{tag}{L}", [cs[L][0]])
            for d in range(ctx.cfg.val_draws):
                picks = random_feature_picks(ref, ctx.bank, draw_seed(ctx.cfg.seed, d, stage=1))
                plans[f"R{tag}{L}.{d}"] = ctx.plan("r", picks).hook_vectors(ctx.lm.device)
    if not plans:
        return
    rows = ctx.generate(val_items, plans, "validate-random")
    for tag, cs, scores, out in arms:
        for L in (L for L in cs if scores[L] > v.baseline):
            draws = [ctx.measure(rows[f"R{tag}{L}.{d}"]) for d in range(ctx.cfg.val_draws)]
            out[L] = sum(draws) / len(draws)
