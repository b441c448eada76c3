"""The stages of `corrsteer run` as functions with typed results:

    collect -> rank -> validate -> prefix search -> test        (report: corrsteer.pipeline.run)

Each generating stage works in batches, sharded over torchrun ranks (dist.py), and checkpoints after every round of
batches under a key of everything its result depends on (checkpoint.py): collect's key covers the model, the SAEs,
the items, scorer, pool and batch size; the plan stages' keys cover the model, the items, the scorer and generation
settings, and each steering plan's vectors (which carry the SAE weights, the features, the coefficient rule and the
scale). `rank` is a pure function of the collected statistics and is recomputed, not stored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from corrsteer.config import RunConfig
from corrsteer.method.rank import Candidate, layer_candidates, negative_candidates, resolve_ranking
from corrsteer.method.variants import p_prefixes, random_feature_picks, variant_a, variant_n, variant_p, variant_s
from corrsteer.model.generate import generate_batch
from corrsteer.model.lm import LM
from corrsteer.model.steer import SteeringPlan
from corrsteer.pipeline.collect import Collected, collect, prediction_rows
from corrsteer.report.stats import balanced_accuracy
from corrsteer.runtime.checkpoint import StageCheckpoint, items_identity, log, task_identity, vectors_identity
from corrsteer.runtime.dist import SINGLE, Dist, my_batches, n_batches, rounds
from corrsteer.sae.bank import SAEBank
from corrsteer.tasks.task import Task

CKPT_DIR = "checkpoints"


class RunError(RuntimeError):
    """The data gave no usable result (not a usage error): `corrsteer: error: <line>`, exit status 1."""


@dataclass
class Context:
    """What every stage reads: the model, SAEs, task, settings, output directory and this process's rank."""
    lm: LM
    bank: SAEBank
    task: Task
    cfg: RunConfig
    out: Path
    sae_source: str = "trained"
    dist: Dist = SINGLE
    model_id: str = ""
    ranking: str = field(init=False)      # --ranking resolved once for this task (auto: within-class where the
                                          # task has classes, else pearson): what every stage and the record read

    def __post_init__(self):
        self.ranking = resolve_ranking(self.cfg.ranking, self.task)

    def ckpt(self, stage: str) -> Path:
        return self.out / CKPT_DIR / f"{stage}.safetensors"

    def measure(self, rows) -> float:
        """What selection compares: balanced accuracy where the task has classes, else accuracy."""
        return balanced_accuracy(rows, classes=self.task.has_classes)


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


@dataclass
class PrefixSearch:
    picks: list[Candidate]                                # the chosen prefix of P's features
    accuracy: list = field(default_factory=list)          # validation score (Context.measure) of each prefix


def accuracy(rows) -> float:
    return sum(r["correct"] for r in rows) / max(1, len(rows))


# ---------------------------------------------------------------------------------------------------------------
# generation under several plans, sharded and checkpointed
# ---------------------------------------------------------------------------------------------------------------
def _plan_batch(lm, task, batch, plans: dict, steer_prompt: bool) -> dict:
    names = list(plans)
    out = generate_batch(lm, [it.prompt for it in batch], task.max_new_tokens, plans=[plans[n] for n in names],
                         steer_prompt=steer_prompt, **task.gen_kwargs)
    C = len(names)
    return {n: prediction_rows(task, batch, out.texts[c::C]) for c, n in enumerate(names)}


def plans_key(ctx_model: str, task, items, plans: dict, per_batch: int, steer_prompt: bool) -> dict:
    return dict(model=ctx_model, items=items_identity(items), task=task_identity(task), batch_size=per_batch,
                all_positions=steer_prompt, variants=sorted(plans), **{f"plan {n}": v for n, v in
                                                                       vectors_identity(plans).items()})


def run_plans(lm, task, items, plans: dict, batch_size: int, desc: str, steer_prompt: bool = False,
              dist: Dist = SINGLE, checkpoint=None, model_id: str = "") -> dict:
    """Generate every item under every plan ({name: {HookPoint: vector}}) in shared batches: {name: rows}."""
    names = list(plans)
    per_batch = max(1, batch_size * 4 // len(names))      # keep batch rows (prompts x plans) bounded
    n = n_batches(len(items), per_batch)
    rows = {nm: [] for nm in names}
    ckpt = StageCheckpoint(checkpoint, desc, plans_key(model_id, task, items, plans, per_batch, steer_prompt)) \
        if checkpoint else None
    found = dist.broadcast(ckpt.load() if (ckpt and dist.main) else None)
    start = 0
    if found is not None and set(found[1]) == set(names):
        start, rows = found[0], found[1]
    if dist.active:
        log(f"rank {dist.rank}/{dist.world}: {desc} batches {my_batches(n, dist, start)} of {n}")
    bar = tqdm(total=n, initial=start, desc=desc, unit="batch", disable=not dist.main)

    def work(b):
        return _plan_batch(lm, task, items[b * per_batch:(b + 1) * per_batch], plans, steer_prompt)

    for done, results in rounds(n, start, dist, work):
        for res in results:
            for nm in names:
                rows[nm].extend(res[nm])
        if ckpt and dist.main:
            ckpt.save(done, rows)
        bar.update(len(results))
    bar.close()
    return rows


def _gen(ctx: Context, items, plans: dict, stage: str) -> dict:
    return run_plans(ctx.lm, ctx.task, items, plans, ctx.cfg.batch_size, stage, ctx.cfg.all_positions,
                     dist=ctx.dist, checkpoint=ctx.ckpt(stage), model_id=ctx.model_id)


def _plan(ctx: Context, name: str, picks: list[Candidate], all_positions: bool = False) -> SteeringPlan:
    return SteeringPlan.from_features(name, ctx.lm.name, ctx.sae_source, ctx.bank, picks, all_positions)


# ---------------------------------------------------------------------------------------------------------------
# the stages
# ---------------------------------------------------------------------------------------------------------------
def collect_stage(ctx: Context, items) -> Collected:
    return collect(ctx.lm, ctx.bank, ctx.task, items, ctx.cfg.batch_size, ctx.cfg.pool, checkpoint=ctx.ckpt("collect"),
                   dist=ctx.dist, model_id=ctx.model_id, ranking=ctx.ranking, seed=ctx.cfg.seed)


def rank_stage(ctx: Context, col: Collected) -> dict[int, list[Candidate]]:
    """{layer: top-5 features} with positive correlation; RunError when there are none."""
    cands = layer_candidates(col.sae, ctx.ranking, k=5, coef=ctx.cfg.coef, scale=ctx.cfg.scale,
                             by_class=col.by_class)
    if not cands:
        raise RunError(no_candidates_message(col.rows, ctx.ranking))
    return cands


def no_candidates_message(rows: list[dict], ranking: str) -> str:
    """Why no feature was ranked: correctness fully predicted by the class (within-class ranking), or not both
    right and wrong answers on the select split."""
    by_class: dict[str, set] = {}
    for r in rows:
        by_class.setdefault(str(r["gold"]), set()).add(float(r["correct"]) >= 0.5)
    both = len(set().union(*by_class.values())) == 2 if by_class else False
    if ranking == "within-class" and both and all(len(v) == 1 for v in by_class.values()):
        parts = ", ".join(f"{g} {'right' if True in v else 'wrong'}" for g, v in sorted(by_class.items()))
        return ("no SAE feature correlates positively with correctness within the classes on the select split: "
                f"correctness is fully predicted by the class (every item of each class: {parts}; "
                f"{len(rows)} samples), so the within-class ranking has nothing to rank: try a larger --n-select, "
                "another task or --ranking pearson")
    return ("no SAE feature correlates positively with correctness on the select split (accuracy "
            f"{accuracy(rows):.2f} over {len(rows)} samples), expected both right and wrong answers: try a larger "
            "--n-select or another task")


def shuffled_candidates(ctx: Context, col: Collected) -> dict[int, list[Candidate]]:
    """The shuffled-outcome control's candidates: every layer's features ranked by the run's ranking against the
    scores permuted within class and batch (pearson for the rankings collection keeps no shuffled statistics of)."""
    ranking = ctx.ranking if ctx.ranking in ("pearson", "within-class") else "pearson"
    return layer_candidates(col.shuffled, ranking, k=1, coef=ctx.cfg.coef, scale=ctx.cfg.scale,
                            by_class=col.shuffled_by_class if ranking == "within-class" else None)


def validate_stage(ctx: Context, cands: dict, val, shuffled: dict | None = None) -> Validation:
    """Every layer's best feature alone, and the unsteered baseline, on the validation split (CorrSteer-P only),
    scored by Context.measure (balanced accuracy where the task has classes: a layer that only pushes one class
    does not beat the baseline); the shuffled-outcome control's features in the same batches. With --p-filter
    random, then norm-matched random features at the layers that beat the baseline (random_stage)."""
    if "P" not in ctx.cfg.variants:
        return Validation()
    shuffled = shuffled or {}
    plans = {"baseline": {}} | {f"L{L}": _plan(ctx, f"L{L}", [cands[L][0]]).hook_vectors(
        ctx.lm.device) for L in cands}
    plans |= {f"S{L}": _plan(ctx, f"S{L}", [shuffled[L][0]]).hook_vectors(ctx.lm.device) for L in shuffled}
    rows = _gen(ctx, val, plans, "validate")
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
            ref = _plan(ctx, f"{tag}{L}", [cs[L][0]])
            for d in range(ctx.cfg.val_draws):
                picks = random_feature_picks(ref, ctx.bank, draw_seed(ctx.cfg.seed, d, stage=1))
                plans[f"R{tag}{L}.{d}"] = _plan(ctx, "r", picks).hook_vectors(ctx.lm.device)
    if not plans:
        return
    rows = _gen(ctx, val_items, plans, "validate-random")
    for tag, cs, scores, out in arms:
        for L in (L for L in cs if scores[L] > v.baseline):
            draws = [ctx.measure(rows[f"R{tag}{L}.{d}"]) for d in range(ctx.cfg.val_draws)]
            out[L] = sum(draws) / len(draws)


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
    plans = {f"{a}{i + 1}": _plan(ctx, "p", pre[i]).hook_vectors(ctx.lm.device)
             for a, pre in search.items() for i in range(1, len(pre))}
    rows = _gen(ctx, val_items, plans, "prefix") if plans else {}
    out = {a: PrefixSearch(picks=k) for a, k in arms.items()}    # the paper (--p-combine all), or one layer or none
    for a, pre in search.items():
        acc = [pre[0][0].val_acc] + [ctx.measure(rows[f"{a}{i + 1}"]) for i in range(1, len(pre))]
        best = max(range(len(pre)), key=lambda i: (acc[i], -i))
        out[a] = PrefixSearch(picks=pre[best], accuracy=acc)
    return out["P"], out.get("S")


def variant_picks(ctx: Context, cands: dict, prefix: PrefixSearch | None, col: Collected | None = None) -> dict:
    """{variant: picks}; N steers away from the most negatively correlated feature of each layer P keeps (every
    layer when P is not run)."""
    def negative():
        layers = [p.layer for p in prefix.picks] if prefix is not None else list(col.sae)
        return variant_n(negative_candidates(col.sae, layers, ctx.ranking, ctx.cfg.scale, col.by_class))

    pickers = {"S": lambda: variant_s(cands), "A": lambda: variant_a(cands), "P": lambda: prefix.picks, "N": negative}
    return {n: pickers[n]() for n in ctx.cfg.variants}


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
            out[name] = _plan(ctx, name, picks, ctx.cfg.all_positions)
    picks = shuffled.picks if shuffled is not None else variant_a(shuffled_candidates(ctx, col))
    out["control-shuffled-outcome"] = _plan(ctx, "control-shuffled-outcome", picks, ctx.cfg.all_positions)
    return out


def build_plans(ctx: Context, picks: dict) -> dict:
    return {n: _plan(ctx, f"CorrSteer-{n}", p, ctx.cfg.all_positions) for n, p in picks.items()}


def test_stage(ctx: Context, test_items, test_plans: dict) -> dict:
    """{variant: rows} of every plan (the unsteered baseline under "baseline") on the test split."""
    return _gen(ctx, test_items, test_plans, "test")
