"""The report: markdown tables and plots from comparisons and features."""
from fakes import paired_rows

from corrsteer.method.rank import Candidate
from corrsteer.report.markdown import Report, write_report
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
    path = write_report(out, Report(title="MMLU on SmolLM2", comparisons=comps, top_features=top, layer_r=layer_r,
                        settings={"model": "default", "n_train": 1000, "pool": "max", "lr": 0.00123},
                        baselines=baselines))
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
    write_report(out, Report(title="MMLU on SmolLM2", comparisons=comps, top_features=top, layer_r=layer_r,
                 settings={"model": "default", "n_train": 1000, "pool": "max", "lr": 0.00123}, baselines=baselines))
    assert path.read_text() == first


def test_write_report_empty_inputs(tmp_path):
    path = write_report(tmp_path / "empty", Report(title="empty", comparisons=[], top_features={}, layer_r={},
                        settings={}))
    assert path.exists()
    for png in ("r_per_layer.png", "top_features.png"):
        assert _is_png(tmp_path / "empty" / png)


def test_report_with_classes_prompting_and_headline(tmp_path):
    from fakes import class_rows

    from corrsteer.report.stats import evaluate

    base = {"positive": {"positive": 59, "neutral": 41}, "negative": {"negative": 5, "neutral": 90, "positive": 5}}
    collapsed = {"positive": {"positive": 97, "": 3}, "negative": {"positive": 73, "negative": 4, "neutral": 23}}
    balanced = {"positive": {"positive": 80, "neutral": 20}, "negative": {"negative": 75, "positive": 25}}
    rows = {"baseline": class_rows(base, 1), "CorrSteer-P": class_rows(collapsed, 2),
            "prompting": class_rows(balanced, 3)}
    ev = evaluate(rows, classes=True, n_boot=300, seed=0)
    comps = [compare("CorrSteer-P", rows["baseline"], rows["CorrSteer-P"])]
    prompting = [compare("prompting", rows["baseline"], rows["prompting"])]
    vs_p = {"prompting": compare("prompting", rows["CorrSteer-P"], rows["prompting"]).p_value}
    top = {3: [Candidate(layer=3, feature=7, r=0.2, score=0.0, freq=0.1, coef=2.0)]}
    path = write_report(tmp_path, Report(title="t", comparisons=comps, top_features=top, layer_r={3: 0.2}, settings={},
                        evaluation=ev, prompting=prompting, vs_p=vs_p,
                        prompts={"prompting": "{question}\n\nAnswer with exactly one of: positive, negative."}))
    text = path.read_text()
    results = text[text.index("## Results"):text.index("## Top features")]
    head = results.splitlines()[2]
    assert head.startswith("**Headline.** CorrSteer-P is not a gain: balanced accuracy 0.51; no better than a "
                           "constant answer 0.50")
    assert "worse than the prompt (prompting) 0.78" in head and "It answers 'positive' to 85% of items." in head
    assert "Other rows above the unsteered model and a constant answer" in head and ": prompting 0.78 (+0.4" in head
    p = ev.scores["CorrSteer-P"]
    assert "| unsteered (baseline) | 32.0% | — | 0.320 | — | — | -0.185 [" in results
    assert "| negative 0.05 · positive 0.59 |" in results
    assert "| constant answer 'negative' | 50.0% | — | 0.500 | — | — | -0.005 [" in results
    assert f"+18.5 [{100 * p.d_acc.lo:+.1f}, {100 * p.d_acc.hi:+.1f}]" in results
    assert f"{p.d_bacc.point:+.3f} [{p.d_bacc.lo:+.3f}, {p.d_bacc.hi:+.3f}]" in results
    assert "| CorrSteer-P | " in results and "negative 0.04 · positive 0.97" in results
    assert "### Prompting" in results and fmt_p(vs_p["prompting"]) in results.split("### Prompting")[1]
    # the answer distribution: golds' shares, then every variant's (no answer read: its own column)
    assert "| variant | negative | positive | other | (no answer) |" in results
    assert "| gold answers | 50.0% | 50.0% | 0.0% | 0.0% |" in results
    assert "| CorrSteer-P | 2.0% | 85.0% | 11.5% | 1.5% |" in results
    assert "300 paired resamples of the test items (seed 0)" in results
    assert "### Prompts" in text and "~~~~text\n{question}\n\nAnswer with exactly one of: positive, negative.\n~~~~" \
        in text


def test_report_free_form_distribution(tmp_path):
    from corrsteer.report.stats import evaluate

    base = [{"id": i, "gold": str(i), "pred": "7" if i % 2 else str(i), "correct": float(i % 2 == 0)}
            for i in range(20)]
    ev = evaluate({"baseline": base, "S": base}, classes=False, n_boot=50)
    comps = [compare("S", base, base)]
    text = write_report(tmp_path, Report(title="t", comparisons=comps, top_features={}, layer_r={}, settings={},
                        evaluation=ev)).read_text()
    assert "| baseline | 11 | '7' 50.0%; '0' 5.0%; '10' 5.0% |" in text
    assert "| unsteered (baseline) | 50.0% | — | 0.500 | — | — | — | — |" in text
    assert "constant answer" not in text.split("### Answer distribution")[0].split("Balanced accuracy:")[0]
    assert "No CorrSteer-P row in this run. No other row is above the unsteered model (95% simultaneous" in text
