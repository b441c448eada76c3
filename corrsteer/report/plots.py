"""The report's PNG plots: r per layer, and the top features of the best layers. matplotlib's object-oriented API
with the Agg canvas: no pyplot, no global backend, no display; the files carry no version strings."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

from corrsteer.files import atomic_path


class RankedFeature(Protocol):
    """One ranked SAE feature as the report shows it (method.rank.Candidate)."""
    feature: int
    r: float
    score: float | None         # the ranking's score (None: not recorded, r is shown)
    freq: float
    coef: float


_PNG_META = {"Software": None}       # keep the files free of version strings
_N_PLOT_LAYERS = 4                   # top_features.png shows this many of the best layers
_N_PLOT_FEATURES = 10                # and at most this many features each


def feature_score(f: RankedFeature) -> float:
    """The ranking's score of a feature, or its Pearson r where the score was not recorded."""
    score = getattr(f, "score", None)
    return float(f.r if score is None else score)


def layer_order(top_features: dict[int, list[RankedFeature]], layer_r: dict[int, float]) -> list[int]:
    """Layers ranked best first: by layer_r (each layer's best score), else by their best feature's score."""
    def score(layer):
        r = layer_r.get(layer)
        if r is None:
            feats = top_features.get(layer) or []
            r = max((feature_score(f) for f in feats), default=-math.inf)
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata=_PNG_META)


def plot_r_per_layer(layer_r: dict[int, float], path: Path, title: str = "", ylabel: str = "best Pearson r") -> Path:
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
        ax.annotate(f"{finite[best]:.3f}", (layers[best], finite[best]), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize=8)
        ax.axhline(0.0, color="grey", linewidth=0.6)
        if len(layers) <= 40:
            ax.set_xticks(layers)
            ax.tick_params(axis="x", labelsize=7)
    else:
        ax.text(0.5, 0.5, "no layers", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(f"Best feature score per layer{' — ' + title if title else ''}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_top_features(top_features: dict[int, list[RankedFeature]], layer_r: dict[int, float], path: Path,
                      title: str = "", xlabel: str = "Pearson r", by_score: bool = False) -> Path:
    """The best layers' top features as bars of their Pearson r (by_score: of the ranking's score)."""
    layers = [L for L in layer_order(top_features, layer_r) if top_features.get(L)][:_N_PLOT_LAYERS]
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
        rs = [feature_score(f) if by_score else float(f.r) for f in feats]
        ys = list(range(len(feats)))[::-1]          # best at the top
        ax.barh(ys, rs, color=["tab:blue" if r >= 0 else "tab:red" for r in rs], height=0.7)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"#{int(f.feature)}" for f in feats], fontsize=8)
        ax.axvline(0.0, color="grey", linewidth=0.6)
        lo, hi = min(0.0, min(rs)), max(0.0, max(rs))
        pad = 0.15 * (hi - lo or 1.0)
        ax.set_xlim(lo - (pad if lo < 0 else 0), hi + pad)
        for y, r in zip(ys, rs):
            ax.text(r, y, f" {r:.3f}", va="center", ha="left" if r >= 0 else "right", fontsize=7)
        ax.set_title(f"layer {L}", fontsize=10)
        ax.set_xlabel(xlabel)
        if i == 0:
            ax.set_ylabel("SAE feature")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Top features of the best layers{' — ' + title if title else ''}", fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    return path
