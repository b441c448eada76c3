"""The bad-input table (docs/bad-input.md, linked from README "Bad input"): every row of the table is backed by a test
that carries the row's id (its parametrize id), and every test of the bad-input files backs a row; where a test
asserts the exact line, the row's message cell (shortened with "...", F a file, M the model, D the test's folder)
matches it."""
import re
from pathlib import Path

import pytest
import test_bad_input
import test_bad_input_more
import test_bad_input_plans
import test_bad_input_safety

TABLE = Path(__file__).resolve().parents[2] / "docs" / "bad-input.md"
MODULES = (test_bad_input, test_bad_input_more, test_bad_input_plans, test_bad_input_safety)
HEADER = "| id | input | message (shortened) | when |"


def table_rows(text: str) -> list[dict]:
    """The rows of the bad-input table (docs/bad-input.md): {id, input, message, when}."""
    lines = text[text.index(HEADER):].split("\n")
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 4, line
        rows.append(dict(id=cells[0].strip("`"), input=cells[1], message=cells[2], when=cells[3]))
    return rows


def backing_tests(module) -> dict[str, tuple[str, str | None]]:
    """{row id: (test name, exact message or None)} of the parametrized tests of a bad-input test module: each test
    carries one parametrize mark whose ids are the table's row ids (a lone `row` argument: its values)."""
    out = {}
    for name, fn in vars(module).items():
        if not (name.startswith("test_") and callable(fn)):
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        assert len(marks) == 1, f"{module.__name__}.{name} must carry one parametrize mark with table row ids"
        argnames, values = marks[0].args[:2]
        argnames = [a.strip() for a in argnames.split(",")] if isinstance(argnames, str) else list(argnames)
        ids = marks[0].kwargs.get("ids") or (list(values) if argnames == ["row"] else None)
        assert ids, f"{module.__name__}.{name}: parametrize without ids"
        for rid, value in zip(ids, values):
            message = value[argnames.index("message")] if "message" in argnames else None
            assert rid not in out, f"row id {rid!r} carried by two tests"
            out[rid] = (name, message)
    return out



def cell_pattern(cell: str) -> re.Pattern | None:
    """A regex for the line a message cell shows: its code span, '...' any text, F / M any file / model name."""
    m = re.fullmatch(r"(?:not an error: )?`(.*)`(?: \([^`]*\))?", cell.replace("\\|", "|"))
    if m is None:
        return None
    pattern = re.escape(m.group(1)).replace(r"\.\.\.", ".*")
    return re.compile(re.sub(r"\b[FM]\b", ".+?", pattern), re.S)


@pytest.fixture(scope="module")
def rows():
    return table_rows(TABLE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def backed():
    out = {}
    for module in MODULES:
        found = backing_tests(module)
        assert not set(found) & set(out), "a row id carried in both files"
        out.update(found)
    return out


def test_every_row_has_a_test_and_every_test_a_row(rows, backed):
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids), ids
    assert sorted(set(ids) - set(backed)) == [], "table rows without a test"
    assert sorted(set(backed) - set(ids)) == [], "tests without a table row"
    assert len(rows) >= 100                          # issue 29: a table of at least 100 cases


def test_each_message_cell_matches_the_line_its_test_asserts(rows, backed):
    checked, wrong = 0, []
    for r in rows:
        message = backed[r["id"]][1]
        pattern = cell_pattern(r["message"])
        if message is None or pattern is None:
            continue
        checked += 1
        if not pattern.fullmatch(message.replace("{d}", "D")):
            wrong.append((r["id"], r["message"], message))
    assert wrong == []
    assert checked >= 100


def test_the_input_cells_of_the_second_pass_are_the_tests_own(rows):
    by_id = {r["id"]: r for r in rows}
    assert [(rid, by_id[rid]["input"]) for rid, what, *_ in test_bad_input_more.ROWS] == \
        [(rid, what) for rid, what, *_ in test_bad_input_more.ROWS]
    early = {rid for rid, *_, e in test_bad_input_more.ROWS if e}
    assert all(by_id[rid]["when"] == "before the model" for rid in early)


@pytest.mark.parametrize("cell, line, ok", [
    ("`--n-select must be positive, got 0`", "--n-select must be positive, got 0", True),
    ("`--n-select must be positive, got 0`", "--n-select must be positive, got 1", False),
    ("`--task-file F: no such file, expected ...`", "--task-file D/x.jsonl: no such file, expected a JSONL", True),
    ("`--task-file F: no such file, expected ...`", "--task-file D/x.jsonl: no items, expected a JSONL", False),
    ("not an error: `moved to F.corrupt`", "moved to D/c.corrupt", True),
    ("`a \\| b` (exit 1)", "a | b", True),
    ("a sentence, no code span", "anything", None),
])
def test_cell_pattern(cell, line, ok):
    pattern = cell_pattern(cell)
    assert (pattern is None) if ok is None else bool(pattern.fullmatch(line)) == ok
