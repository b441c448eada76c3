"""Labels a task file may use: the scorer matches a label as a whole word (or phrase), case-insensitively, on text
with punctuation folded to spaces (corrsteer.tasks.scoring.normalize). A label that this folding would change into
something else is refused before the model loads, with its line number, so that no output is scored against a label
the file did not mean:

  - characters other than letters, digits, spaces, hyphens, apostrophes, periods and commas ("a.*", "C++", emoji):
    the scorer would drop them ("a.*" would match the article "a");
  - a label that is empty once folded ("...");
  - a common English word that outputs use in passing (STOP_WORDS: "a", "the", "is", ...): "yes" and "no" are
    allowed, they are the answers of yes/no tasks;
  - two labels of one line that fold to the same text ("Yes" and "yes").

    check_labels(path)     # LabelError "line N: ..." (.expected: what a label should be) for the first bad label
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from corrsteer.tasks.scoring import normalize

STOP_WORDS = frozenset({"a", "an", "the", "is", "it", "its", "of", "to", "in", "on", "at", "and", "or", "nor", "not",
                        "i", "be", "this", "that", "as", "for", "with", "by"})
_IGNORED = re.compile(r"[^\w\s'’.,-]")
SEE = "(see README, Tasks)"
EXPECT_CHARS = f"expected labels of letters, digits, spaces, hyphens, apostrophes, periods or commas, matched as " \
               f"whole words {SEE}"
EXPECT_NONEMPTY = f"expected labels with a letter or digit, matched as whole words {SEE}"
EXPECT_NOT_COMMON = f"expected labels that are not common words such as a, the, is, of (yes and no are allowed) {SEE}"
EXPECT_DISTINCT = f"expected labels that differ in more than case and punctuation {SEE}"


class LabelError(ValueError):
    """A label the scorer cannot match as given: "line N: <why>", and what a label should be instead."""

    def __init__(self, message: str, expected: str):
        super().__init__(message)
        self.expected = expected


def label_check(label: str) -> tuple[str, str] | None:
    """(why `label` cannot be matched as given, what is expected instead), or None."""
    bad = "".join(dict.fromkeys(_IGNORED.findall(label)))
    if bad:
        return f"label {label!r} has characters the scorer ignores ({bad!r})", EXPECT_CHARS
    folded = normalize(label)
    if not folded:
        return f"label {label!r} is empty once punctuation is dropped", EXPECT_NONEMPTY
    if folded in STOP_WORDS:
        return f"label {label!r} is a common word ({folded!r}) that outputs use in passing", EXPECT_NOT_COMMON
    return None


def label_problem(label: str) -> str | None:
    """Why `label` cannot be matched as given, or None."""
    found = label_check(label)
    return found[0] if found else None


def _line_labels(obj) -> tuple[list[str], bool]:
    """(the labels a line declares, whether they come from a "labels" list) for a label or free-form line."""
    if not isinstance(obj, dict):
        return [], False
    if isinstance(obj.get("labels"), list):
        return [l for l in obj["labels"] if isinstance(l, str)], True
    ans = obj.get("answer")
    return ([ans] if isinstance(ans, str) else []), False


def check_labels(path, answers_are_labels: bool) -> None:
    """LabelError "line N: <why>" for the first label of a task file that cannot be matched as given. Lines with a
    "labels" list are checked always; free-form answers only when the task scores them as labels."""
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        labels, listed = _line_labels(json.loads(line))
        if not listed and not answers_are_labels:
            continue
        for label in labels:
            found = label_check(label)
            if found:
                raise LabelError(f"line {n}: {found[0]}", found[1])
        folded = [normalize(l) for l in labels]
        twice = sorted({l for l, f in zip(labels, folded) if folded.count(f) > 1})
        if listed and twice:
            raise LabelError(f"line {n}: labels {', '.join(map(repr, twice))} are the same label to the scorer "
                             "(matching ignores case and punctuation)", EXPECT_DISTINCT)
