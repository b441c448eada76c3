"""Markdown report with PNG plots for one CorrSteer run (a pure function of its inputs)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from corrsteer.report.stats import Comparison

# Plots go through matplotlib's object-oriented API with the Agg canvas: no pyplot, no global backend, no display.
_PNG_META = {"Software": None}       # keep the files free of version strings
_N_PLOT_LAYERS = 4                   # top_features.png shows this many of the best layers
_N_PLOT_FEATURES = 10                # and at most this many features each


# ---------------------------------------------------------------------------------------------------- formatting
def fmt_pct(x: float, digits: int = 1) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def fmt_acc(c: Comparison) -> str:
    """'72.3% [68.1, 76.2]' (accuracy and its 95% interval, in percent)."""
    return f"{fmt_pct(c.acc)} [{100 * c.lo:.1f}, {100 * c.hi:.1f}]"


def fmt_points(delta: float) -> str:
    """Signed difference in percentage points: '+3.1', '-0.4', '0.0'."""
    if not math.isfinite(delta):
        return "n/a"
    s = f"{100 * delta:+.1f}"
    return "0.0" if s in ("+0.0", "-0.0") else s


def fmt_p(p: float) -> str:
    """p-value with 3 significant digits ('0.0123', '1.00'), or '<1e-4'."""
    if not math.isfinite(p):
        return "n/a"
    if p < 1e-4:
        return "<1e-4"
    return f"{p:#.3g}"


def fmt_num(x, digits: int = 3, alt: bool = False) -> str:
    """Floats with `digits` significant digits (alt: keep trailing zeros, '1.50'); anything else as str."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else (f"{x:#.{digits}g}" if alt else f"{x:.{digits}g}")
    return str(x)


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence], align: Sequence[str] | None = None) -> list[str]:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


_RESULT_HEADER = ["variant", "accuracy [95% CI]", "Δ vs baseline (points)", "McNemar p", "SER",
                  "changed / improved / worsened"]
_RESULT_ALIGN = [":---", "---:", "---:", "---:", "---:", "---:"]


def _result_rows(comparisons: Sequence[Comparison]) -> list[list[str]]:
    return [[c.variant, fmt_acc(c), fmt_points(c.delta), fmt_p(c.p_value), f"{c.ser:.3f}",
             f"{c.n_changed} / {c.n_improved} / {c.n_worsened}"] for c in comparisons]


# ---------------------------------------------------------------------------------------------------- plots
def _layer_order(top_features: dict[int, list[dict]], layer_r: dict[int, float]) -> list[int]:
    """Layers ranked best first: by layer_r, else by their best feature's r."""
    def score(layer):
        r = layer_r.get(layer)
        if r is None:
            feats = top_features.get(layer) or []
            r = max((float(f["r"]) for f in feats), default=-math.inf)
        return -math.inf if not math.isfinite(r) else float(r)
    layers = sorted(set(top_features) | set(layer_r))
    return sorted(layers, key=lambda L: (-score(L), L))


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    fig.savefig(path, format="png", metadata=_PNG_META)


def plot_r_per_layer(layer_r: dict[int, float], path: Path, title: str = "") -> Path:
    fig = _new_figure(max(6.0, 0.28 * len(layer_r) + 2.5), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    layers = sorted(layer_r)
    rs = [float(layer_r[L]) for L in layers]
    if layers:
        finite = [r if math.isfinite(r) else 0.0 for r in rs]
        best = max(range(len(layers)), key=lambda i: finite[i])
        colors = ["tab:orange" if i == best else "tab:blue" for i in range(len(layers))]
        ax.bar(layers, finite, color=colors, width=0.8)
        ax.plot(layers, finite, color="black", linewidth=0.8, marker=".", alpha=0.6)
        ax.annotate(f"r = {finite[best]:.3f}", (layers[best], finite[best]), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize=8)
        ax.axhline(0.0, color="grey", linewidth=0.6)
        if len(layers) <= 40:
            ax.set_xticks(layers)
            ax.tick_params(axis="x", labelsize=7)
    else:
        ax.text(0.5, 0.5, "no layers", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("layer")
    ax.set_ylabel("best Pearson r")
    ax.set_title(f"Best feature correlation per layer{' — ' + title if title else ''}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_top_features(top_features: dict[int, list[dict]], layer_r: dict[int, float], path: Path,
                      title: str = "") -> Path:
    layers = [L for L in _layer_order(top_features, layer_r) if top_features.get(L)][:_N_PLOT_LAYERS]
    n = max(1, len(layers))
    n_feat = max([min(len(top_features[L]), _N_PLOT_FEATURES) for L in layers] or [1])
    fig = _new_figure(4.2 * n, 1.2 + 0.35 * n_feat + 0.6)
    if not layers:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no features", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for i, L in enumerate(layers):
        ax = fig.add_subplot(1, n, i + 1)
        feats = top_features[L][:_N_PLOT_FEATURES]
        rs = [float(f["r"]) for f in feats]
        ys = list(range(len(feats)))[::-1]          # best at the top
        ax.barh(ys, rs, color=["tab:blue" if r >= 0 else "tab:red" for r in rs], height=0.7)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"#{int(f['feature'])}" for f in feats], fontsize=8)
        ax.axvline(0.0, color="grey", linewidth=0.6)
        lo, hi = min(0.0, min(rs)), max(0.0, max(rs))
        pad = 0.15 * (hi - lo or 1.0)
        ax.set_xlim(lo - (pad if lo < 0 else 0), hi + pad)
        for y, r in zip(ys, rs):
            ax.text(r, y, f" {r:.3f}", va="center", ha="left" if r >= 0 else "right", fontsize=7)
        ax.set_title(f"layer {L}", fontsize=10)
        ax.set_xlabel("Pearson r")
        if i == 0:
            ax.set_ylabel("SAE feature")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Top features of the best layers{' — ' + title if title else ''}", fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    return path


# ---------------------------------------------------------------------------------------------------- report
def write_report(out_dir: str | os.PathLike, *, title: str, comparisons: list[Comparison],
                 top_features: dict[int, list[dict]], layer_r: dict[int, float], settings: dict,
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
    lines += _table(["setting", "value"], settings_rows, [":---", ":---"])

    lines += ["", "## Results", ""]
    if comparisons:
        c0 = comparisons[0]
        lines += [f"{c0.n} test items; baseline (unsteered) accuracy {fmt_pct(c0.base_acc)}.", ""]
        lines += _table(_RESULT_HEADER, _result_rows(comparisons), _RESULT_ALIGN)
    else:
        lines.append("No steered variants.")
    if baselines:
        lines += ["", "### Comparison methods", ""]
        lines += _table(_RESULT_HEADER, _result_rows(baselines), _RESULT_ALIGN)
    lines += ["", "Accuracy with its Wilson 95% interval; Δ in percentage points against the unsteered model on the "
              "same items; McNemar: exact two-sided test on the paired outcomes; SER (side-effect ratio): share of "
              "changed answers that were right before steering and wrong after; changed / improved / worsened: "
              "answers that differ from the baseline's / wrong → right / right → wrong."]

    if outputs is not None:
        from corrsteer.report.text_checks import text_section
        lines += [""] + text_section(outputs)[:-1]

    lines += ["", "## Top features", ""]
    order = [L for L in _layer_order(top_features, layer_r) if top_features.get(L)]
    if order:
        rows = []
        for L in sorted(order):
            for f in top_features[L]:
                rows.append([L, int(f["feature"]), f"{float(f['r']):+.3f}", fmt_pct(float(f.get("freq", math.nan))),
                             fmt_num(float(f.get("coef", math.nan)), alt=True)])
        lines += _table(["layer", "feature", "r", "frequency", "coefficient"], rows,
                        ["---:", "---:", "---:", "---:", "---:"])
        best = order[0]
        lines += ["", f"Best layer: {best} (r = {float(layer_r.get(best, top_features[best][0]['r'])):+.3f})."]
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
