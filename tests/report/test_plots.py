"""The report's plots: layers ranked best first, PNG files that are the same bytes for the same inputs."""
import math

from corrsteer.method.rank import Candidate
from corrsteer.report.plots import layer_order, plot_r_per_layer, plot_top_features


def _feats(L, rs):
    return [Candidate(layer=L, feature=i, r=r, score=r, freq=0.5, coef=1.0) for i, r in enumerate(rs)]


def test_layer_order_by_layer_r_then_best_feature():
    top = {1: _feats(1, [0.2]), 4: _feats(4, [0.6, 0.1]), 7: _feats(7, [0.3])}
    assert layer_order(top, {1: 0.9}) == [1, 4, 7]                 # layer_r wins over a feature's r
    assert layer_order(top, {}) == [4, 7, 1]
    assert layer_order({}, {2: math.nan, 3: 0.1}) == [3, 2]        # NaN sorts last


def test_plots_are_png_and_reproducible(tmp_path):
    top = {L: _feats(L, [0.5 - 0.1 * i for i in range(4)]) for L in (0, 3, 5)}
    r = {0: 0.5, 3: -0.2, 5: 0.1}
    for name, fn in (("r", lambda p: plot_r_per_layer(r, p, "t")), ("top", lambda p: plot_top_features(top, r, p))):
        a, b = fn(tmp_path / f"{name}a.png"), fn(tmp_path / f"{name}b.png")
        assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert a.read_bytes() == b.read_bytes()
    empty = plot_top_features({}, {}, tmp_path / "empty.png")
    assert empty.read_bytes()[:4] == b"\x89PNG"
