"""The report's section on what steering did to the text: top outputs, distinct counts, collapse / format / scorer-hole
warnings."""
import pytest

from corrsteer.method.rank import Candidate
from corrsteer.report.markdown import Report, write_report
from corrsteer.report.stats import compare
from corrsteer.report.text_checks import answer_format, text_section, text_stats

HEDGE = "It is either positive or negative, but that is all."


def _rows(outputs, golds=None, correct=None):
    golds = golds or ["positive", "negative"] * (len(outputs) // 2 + 1)
    correct = correct or [0.0] * len(outputs)
    return [dict(id=f"i{i}", output=o, gold=golds[i], pred="", correct=c)
            for i, (o, c) in enumerate(zip(outputs, correct))]


BASE = _rows([f"The review is {w}." for w in ["positive", "negative", "neutral", "mixed"] * 5])


@pytest.mark.parametrize("text,fmt", [
    ("", "empty"), ("  ", "empty"), ("Positive", "short"), ("The answer is B", "sentence"),
    ("The review is positive.", "sentence"), ("It is good. It is fine.", "several sentences"),
    ("B. Paris\n\nThe answer is B.", "multi-line"), ("or or or or or or or or", "repetitive"),
])
def test_answer_format(text, fmt):
    assert answer_format(text) == fmt


def test_collapse_and_format_warnings():
    steered = _rows([HEDGE] * 12 + ["Positive"] * 8)
    st = text_stats("CorrSteer-P", steered, BASE)
    assert st.distinct == 2 and st.top[0] == (HEDGE, 12)
    assert any(w.startswith("collapse: one output in 60%") for w in st.warnings)
    assert not any(w.startswith("format change") for w in st.warnings)     # still sentences mostly: 8/20 changed
    short = _rows(["Positive", "Negative", "Neutral", "Mixed"] * 5)
    st = text_stats("CorrSteer-S", short, BASE)
    assert st.format_changed == 20 and any(w.startswith("format change: 100%") for w in st.warnings)
    assert not any(w.startswith("collapse") for w in st.warnings)          # 25% each


def test_no_warning_when_text_is_varied_and_same_shape():
    st = text_stats("CorrSteer-S", _rows([f"The review is {w}, I think." for w in "abcdefghij" * 2]), BASE)
    assert st.warnings == [] and st.distinct == 10


def test_collapse_threshold_is_half():
    just_under = _rows(["Same text here"] * 9 + [f"other {i} text" for i in range(11)])
    at = _rows(["Same text here"] * 10 + [f"other {i} text" for i in range(10)])
    assert not any(w.startswith("collapse") for w in text_stats("v", just_under, None).warnings)
    assert any(w.startswith("collapse") for w in text_stats("v", at, None).warnings)


def test_scorer_hole_warning():
    rows = _rows([HEDGE] * 4, golds=["positive", "negative", "positive", "negative"], correct=[1.0] * 4)
    assert any("scored correct for 2 different gold answers" in w for w in text_stats("v", rows, None).warnings)
    ok = _rows(["Positive", "Negative"] * 2, golds=["positive", "negative"] * 2, correct=[1.0] * 4)
    assert not any("gold answers" in w for w in text_stats("v", ok, None).warnings)


def test_text_section_lists_every_variant():
    lines = text_section({"baseline": BASE, "CorrSteer-P": _rows([HEDGE] * 20)})
    text = "\n".join(lines)
    assert lines[0] == "## What steering did to the text"
    assert "| baseline | 4/20 |" in text and "| CorrSteer-P | 1/20 |" in text
    assert "×20" in text and "⚠ CorrSteer-P: collapse: one output in 100%" in text
    assert "⚠ baseline" not in text


def test_write_report_has_the_text_section(tmp_path):
    steered = _rows([HEDGE] * 20, correct=[1.0] * 20)
    comp = compare("CorrSteer-P", BASE, steered)
    feats = {3: [Candidate(layer=3, feature=7, r=0.4, score=0.4, freq=0.2, coef=1.5)]}
    path = write_report(tmp_path, Report(title="t", comparisons=[comp], top_features=feats, layer_r={3: 0.4},
                        settings={"scorer": "label over {positive, negative}"},
                        outputs={"baseline": BASE, "CorrSteer-P": steered}))
    md = path.read_text()
    assert "## What steering did to the text" in md and "scored correct for 2 different gold answers" in md
    assert md.index("## Results") < md.index("## What steering did") < md.index("## Top features")
    assert "| scorer | label over {positive, negative} |" in md
    old = write_report(tmp_path / "old", Report(title="t", comparisons=[comp], top_features=feats, layer_r={3: 0.4},
                       settings={}))
    assert "What steering did" not in old.read_text()
