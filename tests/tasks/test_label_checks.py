"""Labels a task file may use (corrsteer/tasks/label_checks.py): matched as given, or refused with the line and what
a label should be instead."""
import pytest

from corrsteer.tasks.label_checks import (
    EXPECT_CHARS,
    EXPECT_DISTINCT,
    EXPECT_NONEMPTY,
    EXPECT_NOT_COMMON,
    LabelError,
    check_labels,
    label_problem,
)
from corrsteer.tasks.scoring import extract_label


def test_labels_are_matched_as_given():
    assert label_problem("a.*") and label_problem("\U0001F600") and label_problem("the") and label_problem("C++")
    assert label_problem("non-toxic") is None and label_problem("U.S.") is None and label_problem("yes") is None
    assert extract_label("The item is a product", ["non-toxic", "toxic"]) == ""


@pytest.mark.parametrize("labels, line, expected", [
    (["a.*", "b.*"], 1, EXPECT_CHARS),
    (["...", "yes"], 1, EXPECT_NONEMPTY),
    (["the", "other"], 1, EXPECT_NOT_COMMON),
    (["Yes", "yes", "no"], 2, EXPECT_DISTINCT),
])
def test_each_label_problem_says_what_a_label_should_be(tmp_path, labels, line, expected):
    good = '{"prompt": "p", "answer": "pos", "labels": ["pos", "neg"]}\n'
    bad = '{"prompt": "p", "answer": "%s", "labels": [%s]}\n' % (labels[0], ", ".join(f'"{x}"' for x in labels))
    p = tmp_path / "t.jsonl"
    p.write_text(good * (line - 1) + bad, encoding="utf-8")
    with pytest.raises(LabelError) as e:
        check_labels(p, True)
    assert str(e.value).startswith(f"line {line}: ") and e.value.expected == expected
    assert e.value.expected.startswith("expected labels") and e.value.expected.endswith("(see README, Tasks)")
