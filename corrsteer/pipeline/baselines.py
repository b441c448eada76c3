"""The no-SAE comparison rows choose for themselves: mean-difference and raw-residual steering each pick their own
layer (mean-difference also its scale) on the validation split by the measure CorrSteer-P's validation uses
(Context.measure), from the select split's residual statistics alone: their plans never read the SAE bank's weights.

    choice = baseline_stage(ctx, col, val_items)     # Baselines: {"raw-residual": Chosen, "mean-difference": Chosen}
    choice.plans(ctx)                                # {name: SteeringPlan} (no SAE features; the vectors only)
    choice.record()                                  # what config.json and the report's settings say

Budget, in validation generations per validation item: pass 1 steers with every layer's raw-residual direction and
its mean difference at --scale (2 L plans, L = the run's layers, sharing one prefill per prompt as P's validation
does); pass 2 tries the chosen mean-difference layer at the other multiples of --scale in MD_SCALES (3 plans). So
2 L + 3, against P's L + 1 (its layers and the unsteered baseline) plus at most L - 1 prefixes. Ties go to the lower
layer, then to the earlier scale of MD_SCALES (1 first). Without validation items each takes the layer whose best
raw-residual dimension correlates most with correctness on the select split, at scale 1.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from corrsteer.method.variants import mean_difference, raw_direction
from corrsteer.model.steer import PlanEntry, SteeringPlan
from corrsteer.pipeline.collect import Collected
from corrsteer.pipeline.runner import Context
from corrsteer.runtime.checkpoint import atomic_write_text

RAW, MD = "raw-residual", "mean-difference"
MD_SCALES = (1.0, 0.5, 2.0, 4.0)          # multiples of --scale that mean-difference validates at its chosen layer
NO_SAE = "none (residual statistics)"     # a baseline plan's sae_source


@dataclass
class Chosen:
    """One baseline's choice: its layer, its scale (a multiple of --scale), the validation score of every candidate
    tried ({'L<layer>' or 'x<scale>': score}) and, for raw-residual, the residual dimension."""
    layer: int
    scale: float = 1.0
    scores: dict = field(default_factory=dict)
    dim: int | None = None

    def describe(self) -> str:
        what = f"layer {self.layer}" + (f" dim {self.dim}" if self.dim is not None else f" scale x{self.scale:g}")
        best = self.scores.get(f"x{self.scale:g}", self.scores.get(f"L{self.layer}"))
        return what + (f" (validation {best:.3f})" if best is not None else " (no validation split)")


@dataclass
class Baselines:
    chosen: dict                          # {RAW | MD: Chosen}
    how: str

    def vectors(self, col: Collected, scale: float) -> dict:
        """{name: (layer, vector)} of the chosen directions."""
        r, m = self.chosen[RAW], self.chosen[MD]
        return {RAW: (r.layer, raw_direction(col.raw, r.layer, scale)[1]),
                MD: (m.layer, mean_difference(col.raw, m.layer, scale * m.scale))}

    def plans(self, ctx: Context, col: Collected) -> dict:
        """{name: SteeringPlan} of the chosen directions (no features: the vector alone)."""
        return {n: _plan(ctx, n, L, v) for n, (L, v) in self.vectors(col, ctx.cfg.scale).items()}

    def record(self) -> dict:
        return dict(how=self.how, **{n: dict(layer=c.layer, scale=c.scale, dim=c.dim, validation=c.scores)
                                     for n, c in self.chosen.items()})


def _plan(ctx: Context, name: str, layer: int, vec) -> SteeringPlan:
    hook = ctx.bank[layer].hook.hook_name             # the hook point only (layer and site), not the SAE
    return SteeringPlan(name, ctx.lm.name, NO_SAE, [PlanEntry(layer, hook, [], [])], {hook: vec.float().tolist()},
                        all_positions=ctx.cfg.all_positions)


def _best(scores: dict) -> str:
    """The key of the highest score; ties to the earliest key."""
    keys = list(scores)
    return max(keys, key=lambda k: (scores[k], -keys.index(k)))


def _gen(ctx: Context, items, candidates: dict, stage: str) -> dict:
    plans = {n: {ctx.bank[L].hook: v.to(ctx.lm.device)} for n, (L, v) in candidates.items()}
    rows = ctx.generate(items, plans, stage)
    return {n: ctx.measure(r) for n, r in rows.items()}


def baseline_stage(ctx: Context, col: Collected, val_items) -> Baselines:
    """Each baseline's layer (and mean-difference's scale) chosen on the validation split (module docstring)."""
    layers, scale = sorted(col.raw), ctx.cfg.scale
    dims = {L: raw_direction(col.raw, L, scale) for L in layers}
    if not val_items:
        L = max(layers, key=lambda L: (float(col.raw[L].pearson()[dims[L][0]]), -L))
        return Baselines({RAW: Chosen(L, dim=dims[L][0]), MD: Chosen(L)},
                         "no validation split: the layer of the best raw-residual correlation on select")
    first = {f"raw L{L}": (L, dims[L][1]) for L in layers} | \
        {f"md L{L}": (L, mean_difference(col.raw, L, scale)) for L in layers}
    s1 = _gen(ctx, val_items, first, "validate-baselines")
    raw_L = int(_best({k: v for k, v in s1.items() if k.startswith("raw")}).split("L")[1])
    md_L = int(_best({k: v for k, v in s1.items() if k.startswith("md")}).split("L")[1])
    more = {f"x{m:g}": (md_L, mean_difference(col.raw, md_L, scale * m)) for m in MD_SCALES[1:]}
    s2 = {f"x{MD_SCALES[0]:g}": s1[f"md L{md_L}"]} | _gen(ctx, val_items, more, "validate-md-scale")
    m = float(_best(s2)[1:])
    raw = Chosen(raw_L, scores={f"L{L}": s1[f"raw L{L}"] for L in layers}, dim=dims[raw_L][0])
    md = Chosen(md_L, m, {f"L{L}": s1[f"md L{L}"] for L in layers} | s2)
    how = (f"each chose its layer (mean-difference then its scale among x{', x'.join(f'{s:g}' for s in MD_SCALES)}"
           f" of --scale) on the {len(val_items)} validation items by {_measure_name(ctx)}")
    return Baselines({RAW: raw, MD: md}, how)


def _measure_name(ctx: Context) -> str:
    return "balanced accuracy" if ctx.task.has_classes else "accuracy"


def record_in_config(out, record: dict) -> None:
    """Add the baselines' choice to <out>/config.json (under "baselines")."""
    path = out / "config.json"
    doc = json.loads(path.read_text())
    doc["baselines"] = record
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
