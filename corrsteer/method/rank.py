"""Feature rankings, one module: CorrSteer's Pearson r, the class-aware pooled within-class r, and the paper's
comparison rows (SPARE-style MI, DSG-style Fisher ratio, CAA mean difference), all from the one collection pass, as
typed candidates per layer.

within-class (the default where the task's items have classes: label tasks' gold labels, MC gold letters,
refusal's harmful/benign; `resolve_ranking`): when the model is right more often on one class than another, plain
Pearson r rewards the feature that merely encodes the class (steering then answers that class everywhere). The
pooled within-class correlation removes each class's means first:

    r_w = sum_c cov_c(z, y) / sqrt(sum_c var_c(z) * sum_c var_c(y))        (sums of squares within class c)

from per-class CorrStats (collect.py); a class where y is constant adds nothing to the y variance and its
covariance is taken as exactly 0. The coefficient is unchanged (mean over correct samples of all classes).

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

from corrsteer.errors import RunError
from corrsteer.report.stats import balanced_accuracy
from corrsteer.settings import SettingsError
from corrsteer.tasks.task import CLASS_KINDS, Task
from corrsteer_kernels import CorrStats, RankStats

COEFS = ("mean", "active")


def resolve_ranking(ranking: str, task: Task) -> str:
    """--ranking auto -> within-class where the task has classes, else pearson; within-class on a free-form task is
    a usage error."""
    if ranking == "auto":
        return "within-class" if task.has_classes else "pearson"
    if ranking == "within-class" and not task.has_classes:
        raise SettingsError(f"--ranking within-class needs a task whose answers are classes ({', '.join(CLASS_KINDS)})"
                            f", got {task.name!r} of kind {task.kind!r}")
    return ranking


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


def fused(ranking: str) -> bool:
    """Whether a ranking needs only CorrStats' sums (the fused encode_pool_stats path)."""
    return ranking in ("pearson", "within-class")


def make_stats(ranking: str, d_sae: int, device) -> CorrStats:
    """The statistics object a ranking needs: CorrStats for pearson / within-class (fused path), RankStats
    otherwise."""
    return CorrStats(d_sae, device=device) if fused(ranking) else RankStats(d_sae, device=device)


def _centred(sum_a, sum_b, sum_ab, n):
    """Within-group sum of cross products: sum_ab - sum_a * sum_b / n (0 for an empty group)."""
    return torch.where(n > 0, sum_ab - sum_a * sum_b / n.clamp(min=1), torch.zeros_like(sum_ab))


def within_class_r(by_class: list[CorrStats]) -> torch.Tensor:
    """float64 [d_sae]: the pooled within-class Pearson r of each feature with y over the classes' statistics;
    classes with constant y contribute no covariance and no y variance; 0 where a pooled variance vanishes."""
    if not by_class:
        raise ValueError("within-class ranking needs per-class statistics (collect them with the task's classes)")
    cov = var_z = torch.zeros_like(by_class[0].sum_z)
    var_y = torch.zeros((), dtype=torch.float64, device=cov.device)
    raw_z = torch.zeros_like(cov)
    for st in by_class:
        n = st.n
        vy = _centred(st.sum_y, st.sum_y, st.sum_y2, n)
        varies = vy > 1e-12 * st.sum_y2
        cov = cov + torch.where(varies, _centred(st.sum_dz, st.sum_y, st.sum_dzy, n), torch.zeros_like(cov))
        var_y = var_y + torch.where(varies, vy, torch.zeros_like(vy))
        var_z = var_z + _centred(st.sum_dz, st.sum_dz, st.sum_dz2, n)      # shifted sums: no cancellation
        raw_z = raw_z + st.sum_dz2
    ok = (var_z > 1e-12 * raw_z) & (var_y > 0)
    denom = torch.sqrt(var_z.clamp(min=0) * var_y.clamp(min=0))
    r = torch.where(ok, cov / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(cov))
    return r.clamp(-1.0, 1.0)


def correlation(stats: CorrStats, ranking: str, by_class: list[CorrStats] | None = None) -> torch.Tensor:
    """[d_sae] signed correlation the ranking reads: r_w for within-class, Pearson r otherwise."""
    return within_class_r(by_class or []) if ranking == "within-class" else stats.pearson()


def _score(stats: CorrStats, ranking: str, by_class: list[CorrStats] | None = None) -> torch.Tensor:
    """[d_sae] scores, -inf where a feature does not favour correct answers."""
    if fused(ranking):
        r = correlation(stats, ranking, by_class)
        return torch.where(r > 0, r, torch.full_like(r, -torch.inf))
    if not isinstance(stats, RankStats):
        raise TypeError(f"ranking {ranking!r} needs RankStats (collect with ranking={ranking!r})")
    score = stats.score(ranking)
    return torch.where(stats.favours_correct(ranking), score, torch.full_like(score, -torch.inf))


def ranked_features(stats: CorrStats, ranking: str = "pearson", k: int = 5, coef: str = "mean", scale: float = 1.0,
                    layer: int = -1, by_class: list[CorrStats] | None = None) -> list[Candidate]:
    """The k features of `layer` with the highest score that favour correct answers, best first (`by_class`: the
    layer's per-class statistics, which within-class ranking reads)."""
    if coef not in COEFS:
        raise ValueError(f"coef must be 'mean' or 'active', got {coef!r}")
    score = _score(stats, ranking, by_class)
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
                     scale: float = 1.0, by_class: dict | None = None) -> dict[int, list[Candidate]]:
    """{layer: ranked candidates}; layers with no feature favouring correct answers (or a zero coefficient) are
    left out. by_class: {layer: [CorrStats per class]} (within-class ranking)."""
    out = {}
    for L, st in stats_by_layer.items():
        top = ranked_features(st, ranking, k, coef, scale, layer=L, by_class=(by_class or {}).get(L))
        if top and top[0].coef > 0:
            out[L] = top
    return out


def negative_candidates(stats_by_layer: dict, layers, ranking: str = "pearson", scale: float = 1.0,
                        by_class: dict | None = None) -> dict[int, Candidate]:
    """Variant N: {layer: the feature most negatively correlated with correctness (r_w for within-class, else
    Pearson r)} for each of `layers` that has one, with coefficient -(mean pooled activation over incorrect
    samples) * scale: steering away by the feature's typical size where the model is wrong."""
    out = {}
    for L in layers:
        st = stats_by_layer[L]
        r = correlation(st, ranking, (by_class or {}).get(L))
        j = int(torch.argmin(r))
        n_neg = float(st.n - st.n_pos)
        if float(r[j]) >= 0 or n_neg == 0:
            continue
        mean_wrong = float(st.sum_z[j] - st.sum_z_pos[j]) / n_neg
        if mean_wrong > 0:
            out[L] = Candidate(layer=L, feature=j, r=float(st.pearson()[j]), score=float(r[j]),
                               freq=float(st.n_active[j]) / max(float(st.n), 1.0), coef=-mean_wrong * scale)
    return out


def rank_layers(col, ranking: str, coef: str = "mean", scale: float = 1.0) -> dict[int, list[Candidate]]:
    """{layer: top-5 features} with positive correlation from the collected statistics (col: a Collected); RunError
    when there are none."""
    cands = layer_candidates(col.sae, ranking, k=5, coef=coef, scale=scale, by_class=col.by_class)
    if not cands:
        raise RunError(no_candidates_message(col.rows, ranking))
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
            f"{balanced_accuracy(rows, classes=False):.2f} over {len(rows)} samples), expected both right and wrong "
            "answers: try a larger --n-select or another task")


def shuffled_candidates(col, ranking: str, coef: str = "mean", scale: float = 1.0) -> dict[int, list[Candidate]]:
    """The shuffled-outcome control's candidates: every layer's features ranked by the run's ranking against the
    scores permuted within class and batch (pearson for the rankings collection keeps no shuffled statistics of)."""
    ranking = ranking if ranking in ("pearson", "within-class") else "pearson"
    return layer_candidates(col.shuffled, ranking, k=1, coef=coef, scale=scale,
                            by_class=col.shuffled_by_class if ranking == "within-class" else None)
