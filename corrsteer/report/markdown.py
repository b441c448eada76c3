"""The markdown report of one CorrSteer run, with its PNG plots (a pure function of its inputs)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from corrsteer.files import atomic_write_text
from corrsteer.report.headline import headline
from corrsteer.report.plots import RankedFeature, feature_score, layer_order, plot_r_per_layer, plot_top_features
from corrsteer.report.results import distribution_table, results_table
from corrsteer.report.stats import Comparison, Evaluation
from corrsteer.report.tables import fmt_num, fmt_pct, table
from corrsteer.report.text_checks import text_section

LEGEND = ("Accuracy with its Wilson 95% interval; Δ in percentage points against the unsteered model on the same "
          "items; McNemar p (accuracy): exact two-sided test on the paired right / wrong outcomes, so it tests "
          "accuracy, not balanced accuracy; SER (side-effect ratio): share of changed "
          "answers that were right before steering and wrong after; changed / improved / worsened: answers that "
          "differ from the baseline's / wrong → right / right → wrong.")
BALANCED_LEGEND = ("Balanced accuracy: the mean of the per-class recalls (share of items of each gold class answered "
                   "right), so answering one class everywhere scores 1 / (number of classes) whatever the class mix; "
                   "for free-form tasks it is the accuracy. [bootstrap]: {pct} percentile interval over {n} paired "
                   "resamples of the test items (seed {seed}). Δ vs unsteered [simultaneous]: the {metric} "
                   "difference with max-T intervals over every row but CorrSteer-P together (the same resamples), "
                   "which is what the headline reads for those rows. Δ vs P: the row's {metric} minus "
                   "CorrSteer-P's. The constant answer is the best single answer given to every item (tasks with "
                   "classes only); McNemar p vs P compares a row with CorrSteer-P on the same items.")
PROMPTING_LEGEND = ("Prompting rows: the same model, unsteered, with the prompts under Prompts: `prompting` adds a "
                    "fixed instruction (the answer format and the allowed answers), `few-shot` puts solved examples "
                    "from the select split before the question, and `prompting+P` is the `prompting` text under "
                    "CorrSteer-P's plan (the instruction prompt is fixed in advance, not chosen on the test items).")


@dataclass
class Report:
    """What report.md shows. top_features: {layer: [{"feature", "r", "freq" (fraction of samples active), "coef"},
    ...]}, best first. layer_r: {layer: best r at that layer}. outputs: {variant: test rows with id, output, gold,
    correct}, the unsteered ones under "baseline": adds the section on what steering did to the text. extra: markdown
    lines added before the plots (e.g. Neuronpedia links). evaluation (corrsteer.report.stats.evaluate over every
    row set): the headline, balanced accuracy, per-class recall, the constant answer, bootstrap intervals and the
    answer distribution. prompting: the prompting rows' comparisons; vs_p: {variant: McNemar p against
    CorrSteer-P}; prompts: {variant: the prompt text it used} (the Prompts section). score_name: what the ranking
    scored the features by ("r" for Pearson; layer_r then holds each layer's best score)."""
    title: str
    comparisons: list[Comparison]
    top_features: dict[int, list[RankedFeature]]
    layer_r: dict[int, float]
    settings: dict
    baselines: Sequence[Comparison] = ()
    outputs: dict[str, list[dict]] | None = None
    extra: Sequence[str] = ()
    evaluation: Evaluation | None = None
    prompting: Sequence[Comparison] = ()
    vs_p: dict[str, float] | None = None
    prompts: dict[str, str] | None = None
    score_name: str = "r"


def write_report(out_dir: str | os.PathLike, report: Report, plots: bool = True) -> Path:
    """Write ``out_dir/report.md``, ``r_per_layer.png`` and ``top_features.png`` (plots=False: report.md only);
    returns the report's path. Accuracies print as percent, Δ in percentage points, p-values with 3 significant
    digits (or '<1e-4')."""
    r = report
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        label = "Pearson r" if r.score_name == "r" else r.score_name
        plot_r_per_layer(r.layer_r, out / "r_per_layer.png", ylabel=f"best {label}")
        plot_top_features(r.top_features, r.layer_r, out / "top_features.png", xlabel=label,
                          by_score=r.score_name != "r")

    lines = [f"# {r.title}", "", "## Settings", ""]
    settings_rows = [[k, fmt_num(v, digits=6)] for k, v in r.settings.items()]
    lines += table(["setting", "value"], settings_rows, [":---", ":---"])

    lines += ["", "## Results", ""] + _results(r.comparisons, r.baselines, r.prompting, r.evaluation, r.vs_p)
    if r.prompts:
        lines += ["", "### Prompts", ""] + _prompts(r.prompts)

    if r.outputs is not None:
        lines += [""] + text_section(r.outputs)[:-1]

    lines += ["", "## Top features", ""] + _features(r.top_features, r.layer_r, r.score_name)
    if r.extra:
        lines += [""] + list(r.extra)
    lines += ["", "## Plots", "", "![Best r per layer](r_per_layer.png)", "",
              "![Top features of the best layers](top_features.png)", "",
              "[r_per_layer.png](r_per_layer.png) · [top_features.png](top_features.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _results(comparisons, baselines, prompting, ev: Evaluation | None, vs_p) -> list[str]:
    lines = []
    if ev is not None:
        lines += ["**Headline.** " + " ".join(headline(ev)), ""]
    if comparisons:
        c0 = comparisons[0]
        lines += [f"{c0.n} test items; baseline (unsteered) accuracy {fmt_pct(c0.base_acc)}.", ""]
        lines += results_table(comparisons, ev, vs_p, references=True)
    else:
        lines.append("No steered variants.")
    for name, rows in (("Comparison methods", baselines), ("Prompting", prompting)):
        if rows:
            lines += ["", f"### {name}", ""] + results_table(rows, ev, vs_p)
    lines += ["", LEGEND] + (["", PROMPTING_LEGEND] if prompting else [])
    if ev is not None:
        lines += ["", BALANCED_LEGEND.format(pct=f"{100 * ev.level:.0f}%", n=ev.n_boot, seed=ev.seed, metric=ev.metric)]
        lines += ["", "### Answer distribution", "", "Share of each answer read from the outputs, per variant "
                  "(the gold answers' own shares first).", ""] + distribution_table(ev)
    return lines


def _prompts(prompts: dict[str, str]) -> list[str]:
    """Each prompting row's text; {question} marks where the test item's own prompt goes."""
    lines = ["The text each prompting row wraps around a test item's prompt ({question} = the item's prompt):", ""]
    for name, text in prompts.items():
        lines += [f"**{name}**", "", "~~~~text", text, "~~~~", ""]
    return lines[:-1]


def _features(top_features: dict, layer_r: dict, score_name: str) -> list[str]:
    """The top-features table: the ranking's own score first (with Pearson r beside it when the ranking is not
    Pearson's), then the best layer by that score."""
    order = [L for L in layer_order(top_features, layer_r) if top_features.get(L)]
    if not order:
        return ["No features."]
    own = score_name != "r"
    head = ["layer", "feature"] + ([score_name] if own else []) + ["r", "frequency", "coefficient"]
    rows = [[L, int(f.feature)] + ([f"{feature_score(f):+.3f}"] if own else []) +
            [f"{float(f.r):+.3f}", fmt_pct(float(f.freq)), fmt_num(float(f.coef), alt=True)]
            for L in sorted(order) for f in top_features[L]]
    best = order[0]
    value = float(layer_r.get(best, feature_score(top_features[best][0])))
    return table(head, rows, ["---:"] * len(head)) + ["", f"Best layer: {best} ({score_name} = {value:+.3f})."]
