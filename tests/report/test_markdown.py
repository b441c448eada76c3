"""The report: markdown tables and plots from comparisons and features."""
from fakes import paired_rows

from corrsteer.pipeline.rank import Candidate
from corrsteer.report.markdown import write_report
from corrsteer.report.stats import compare
from corrsteer.report.tables import fmt_p


def test_fmt_p():
    assert fmt_p(0.0123) == "0.0123"
    assert fmt_p(0.021484375) == "0.0215"
    assert fmt_p(1.0) == "1.00"
    assert fmt_p(3e-5) == "<1e-4"


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_report(tmp_path):
    base, steered = paired_rows(60, seed=2)
    comps = [compare("corrsteer-A", base, steered), compare("corrsteer-S", base, base)]
    baselines = [compare("random-feature", base, paired_rows(60, seed=3)[1])]
    top = {L: [Candidate(layer=L, feature=100 * L + j, r=0.3 - 0.05 * j + 0.01 * L, score=0.0, freq=0.1 * (j + 1),
                         coef=1.5 + j) for j in range(5)] for L in (2, 5, 7, 11, 13)}
    layer_r = {L: 0.1 + 0.01 * L for L in range(30)}
    out = tmp_path / "nested" / "run"
    path = write_report(out, title="MMLU on SmolLM2", comparisons=comps, top_features=top, layer_r=layer_r,
                        settings={"model": "default", "n_train": 1000, "pool": "max", "lr": 0.00123},
                        baselines=baselines)
    assert path == out / "report.md" and path.exists()
    text = path.read_text()
    assert "# MMLU on SmolLM2" in text
    for name in ("corrsteer-A", "corrsteer-S", "random-feature", "n_train", "0.00123"):
        assert name in text
    c = comps[0]
    assert f"{100 * c.acc:.1f}% [{100 * c.lo:.1f}, {100 * c.hi:.1f}]" in text
    assert fmt_p(c.p_value) in text and f"{c.ser:.3f}" in text
    assert f"{c.n_changed} / {c.n_improved} / {c.n_worsened}" in text
    assert "| 13 | 1300 | +0.430 | 10.0% | 1.50 |" in text
    assert "r_per_layer.png" in text and "top_features.png" in text
    for png in ("r_per_layer.png", "top_features.png"):
        p = out / png
        assert p.exists() and _is_png(p) and p.stat().st_size > 5000, png
    # pure function of its inputs: same bytes again
    first = text
    write_report(out, title="MMLU on SmolLM2", comparisons=comps, top_features=top, layer_r=layer_r,
                 settings={"model": "default", "n_train": 1000, "pool": "max", "lr": 0.00123}, baselines=baselines)
    assert path.read_text() == first


def test_write_report_empty_inputs(tmp_path):
    path = write_report(tmp_path / "empty", title="empty", comparisons=[], top_features={}, layer_r={},
                        settings={})
    assert path.exists()
    for png in ("r_per_layer.png", "top_features.png"):
        assert _is_png(tmp_path / "empty" / png)
