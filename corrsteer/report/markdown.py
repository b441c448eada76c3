"""The markdown report of one CorrSteer run, with its PNG plots (a pure function of its inputs)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from corrsteer.report.plots import RankedFeature, layer_order, plot_r_per_layer, plot_top_features
from corrsteer.report.stats import Comparison
from corrsteer.report.tables import fmt_acc, fmt_num, fmt_p, fmt_pct, fmt_points, table
from corrsteer.report.text_checks import text_section

_RESULT_HEADER = ["variant", "accuracy [95% CI]", "Δ vs baseline (points)", "McNemar p", "SER",
                  "changed / improved / worsened"]
_RESULT_ALIGN = [":---", "---:", "---:", "---:", "---:", "---:"]


def _result_rows(comparisons: Sequence[Comparison]) -> list[list[str]]:
    return [[c.variant, fmt_acc(c), fmt_points(c.delta), fmt_p(c.p_value), f"{c.ser:.3f}",
             f"{c.n_changed} / {c.n_improved} / {c.n_worsened}"] for c in comparisons]


def write_report(out_dir: str | os.PathLike, *, title: str, comparisons: list[Comparison],
                 top_features: dict[int, list[RankedFeature]], layer_r: dict[int, float], settings: dict,
                 baselines: Sequence[Comparison] = (), outputs: dict[str, list[dict]] | None = None,
                 extra: Sequence[str] = ()) -> Path:
    """Write ``out_dir/report.md``, ``r_per_layer.png`` and ``top_features.png``; returns the report's path.

    top_features: {layer: [{"feature", "r", "freq" (fraction of samples active), "coef"}, ...]}, best first.
    layer_r: {layer: best r at that layer}. outputs: {variant: test rows with id, output, gold, correct}, the
    unsteered ones under "baseline": adds the section on what steering did to the text. extra: markdown lines
    added before the plots (e.g. Neuronpedia links). Accuracies print as percent, Δ in percentage points, p-values with
    3 significant digits (or '<1e-4').
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_r_per_layer(layer_r, out / "r_per_layer.png")
    plot_top_features(top_features, layer_r, out / "top_features.png")

    lines = [f"# {title}", "", "## Settings", ""]
    settings_rows = [[k, fmt_num(v, digits=6)] for k, v in settings.items()]
    lines += table(["setting", "value"], settings_rows, [":---", ":---"])

    lines += ["", "## Results", ""]
    if comparisons:
        c0 = comparisons[0]
        lines += [f"{c0.n} test items; baseline (unsteered) accuracy {fmt_pct(c0.base_acc)}.", ""]
        lines += table(_RESULT_HEADER, _result_rows(comparisons), _RESULT_ALIGN)
    else:
        lines.append("No steered variants.")
    if baselines:
        lines += ["", "### Comparison methods", ""]
        lines += table(_RESULT_HEADER, _result_rows(baselines), _RESULT_ALIGN)
    lines += ["", "Accuracy with its Wilson 95% interval; Δ in percentage points against the unsteered model on the "
              "same items; McNemar: exact two-sided test on the paired outcomes; SER (side-effect ratio): share of "
              "changed answers that were right before steering and wrong after; changed / improved / worsened: "
              "answers that differ from the baseline's / wrong → right / right → wrong."]

    if outputs is not None:
        lines += [""] + text_section(outputs)[:-1]

    lines += ["", "## Top features", ""]
    order = [L for L in layer_order(top_features, layer_r) if top_features.get(L)]
    if order:
        rows = []
        for L in sorted(order):
            for f in top_features[L]:
                rows.append([L, int(f.feature), f"{float(f.r):+.3f}", fmt_pct(float(f.freq)), fmt_num(float(f.coef), alt=True)])
        lines += table(["layer", "feature", "r", "frequency", "coefficient"], rows,
                        ["---:", "---:", "---:", "---:", "---:"])
        best = order[0]
        lines += ["", f"Best layer: {best} (r = {float(layer_r.get(best, top_features[best][0].r)):+.3f})."]
    else:
        lines.append("No features.")

    if extra:
        lines += [""] + list(extra)
    lines += ["", "## Plots", "", "![Best r per layer](r_per_layer.png)", "",
              "![Top features of the best layers](top_features.png)", "",
              "[r_per_layer.png](r_per_layer.png) · [top_features.png](top_features.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
