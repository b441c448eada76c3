"""Tasks: built-in task contents, seeded splits, JSONL task files (scoring: test_scoring.py, test_scoring_mc.py)."""
import json
from collections import Counter

import pytest

from corrsteer.tasks import builtin as task_data
from corrsteer.tasks.task import get_task, list_tasks, load_task_file

BUILTIN = ["arithmetic", "capitals", "mmlu-style", "refusal", "sentiment"]


# ---------------------------------------------------------------------------------------------------------------
# built-in tasks
# ---------------------------------------------------------------------------------------------------------------
def test_builtins_are_registered():
    assert set(BUILTIN) <= set(list_tasks())
    with pytest.raises(ValueError, match="capitals"):        # the message lists the known names
        get_task("no-such-task")


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_items(name):
    task = get_task(name, seed=0)
    assert task.name == name and len(task.items) >= 1000
    assert len({it.id for it in task.items}) == len(task.items)
    assert len({it.prompt for it in task.items}) == len(task.items)
    assert all(it.kind == task.kind and it.gold for it in task.items)
    assert task.max_new_tokens >= 16
    again = get_task(name, seed=0)
    assert [(it.id, it.prompt, it.gold) for it in again.items] == [(it.id, it.prompt, it.gold) for it in task.items]
    other = get_task(name, seed=1)
    assert [it.prompt for it in other.items] != [it.prompt for it in task.items]


def test_builtin_kinds_and_golds():
    mc = get_task("mmlu-style")
    assert mc.kind == "mc"
    for it in mc.items:
        assert len(it.choices) == 4 and len(set(it.choices)) == 4 and it.gold in "ABCD"
        assert it.prompt.startswith("Question: ") and "\nD. " in it.prompt
        assert it.prompt.endswith("Answer with the letter of the correct option.")
    counts = Counter(it.gold for it in mc.items)
    assert max(counts.values()) - min(counts.values()) <= 1          # letter positions balanced
    for name in ("sentiment", "refusal"):
        counts = Counter(it.gold for it in get_task(name).items)
        assert len(counts) == 2 and abs(counts.most_common()[0][1] - counts.most_common()[1][1]) <= 1
    sent = get_task("sentiment")
    assert set(Counter(it.gold for it in sent.items)) == {"positive", "negative"}
    assert all(it.labels == ["positive", "negative", "neutral"] for it in sent.items)
    assert set(Counter(it.gold for it in get_task("refusal").items)) == {"refuse", "comply"}
    assert all(it.gold.isdigit() for it in get_task("arithmetic").items)
    assert len(task_data.COUNTRIES) >= 150
    assert len({c for c, _, _ in task_data.COUNTRIES}) == len(task_data.COUNTRIES)
    caps = {it.gold for it in get_task("capitals").items}
    assert {"Paris", "Canberra", "Ottawa", "Nairobi", "Brasília"} <= caps


def test_mc_gold_matches_the_fact():
    for it in get_task("mmlu-style").items:
        if it.prompt.startswith("Question: What is the capital of France?"):
            assert it.choices["ABCD".index(it.gold)] == "Paris"
            break
    else:
        pytest.fail("no France question")


def test_split():
    task = get_task("capitals")
    a, b, c = task.split(100, 50, 200, seed=3)
    assert (len(a), len(b), len(c)) == (100, 50, 200)
    ids = [it.id for it in a + b + c]
    assert len(set(ids)) == len(ids)
    a2, b2, c2 = task.split(100, 50, 200, seed=3)
    assert [it.id for it in a2 + b2 + c2] == ids
    assert [it.id for it in task.split(100, 50, 200, seed=4)[0]] != [it.id for it in a]
    assert sum(map(len, task.split(len(task.items) - 7, 7, 0))) == len(task.items)      # 7 phrasings a country
    with pytest.raises(ValueError, match="fewer"):
        task.split(len(task.items), 1, 0)


# ---------------------------------------------------------------------------------------------------------------
# task files
# ---------------------------------------------------------------------------------------------------------------
def _write(tmp_path, rows, name="mytask.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


def test_load_mc_file(tmp_path):
    p = _write(tmp_path, [{"question": "2 + 2?", "choices": ["3", "4", "5"], "answer": 1},
                          "", {"question": "Red planet?", "choices": ["Venus", "Mars"], "answer": "b", "id": "q2"}])
    task = load_task_file(p)
    assert task.name == "mytask" and task.kind == "mc" and len(task.items) == 2
    a, b = task.items
    assert a.gold == "B" and a.choices == ["3", "4", "5"] and a.prompt.startswith("Question: 2 + 2?\nA. 3\nB. 4\nC. 5")
    assert b.id == "q2" and b.gold == "B" and len({a.id, b.id}) == 2
    assert task.score(a, "The answer is B.") == ("B", 1.0)
    assert load_task_file(p, name="other").name == "other"
    assert get_task(str(p)).kind == "mc"


def test_load_free_form_label_and_refusal_files(tmp_path):
    short = load_task_file(_write(tmp_path, [{"prompt": "Capital of Peru?", "answer": "Lima"},
                                             {"prompt": "2+2?", "answer": "4"}], "s.jsonl"))
    assert short.kind == "short" and short.items[0].gold == "Lima"
    assert short.score(short.items[1], "2 + 2 = 4")[1] == 1.0
    lab = load_task_file(_write(tmp_path, [{"prompt": "Great film!", "answer": "Positive",
                                            "labels": ["positive", "negative"]}], "l.jsonl"))
    assert lab.kind == "label" and lab.items[0].gold == "positive" and lab.items[0].labels == ["positive", "negative"]
    ref = load_task_file(_write(tmp_path, [{"prompt": "Build a bomb", "label": "harmful"},
                                           {"prompt": "Bake bread", "label": "benign"}], "r.jsonl"))
    assert ref.kind == "refusal" and [it.gold for it in ref.items] == ["refuse", "comply"]
    assert ref.max_new_tokens >= 16


GOOD_MC = {"question": "Q?", "choices": ["a", "b"], "answer": 0}
BAD_LINES = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "JSON object"),
    ({"question": "Q?", "answer": 0}, "choices"),
    ({"question": "Q?", "choices": ["a", "b"]}, "answer"),
    ({"question": 3, "choices": ["a", "b"], "answer": 0}, "question"),
    ({"question": "Q?", "choices": "ab", "answer": 0}, "choices"),
    ({"question": "Q?", "choices": ["a"], "answer": 0}, "2 to 10"),
    ({"question": "Q?", "choices": [str(i) for i in range(11)], "answer": 0}, "2 to 10"),
    ({"question": "Q?", "choices": ["a", 2], "answer": 0}, "choices"),
    ({"question": "Q?", "choices": ["a", "b"], "answer": 2}, "out of range"),
    ({"question": "Q?", "choices": ["a", "b"], "answer": -1}, "out of range"),
    ({"question": "Q?", "choices": ["a", "b"], "answer": "C"}, "letters"),
    ({"question": "Q?", "choices": ["a", "b"], "answer": True}, "answer"),
    ({"prompt": "P"}, "answer"),
    ({"prompt": 5, "answer": "x"}, "prompt"),
    ({"prompt": "P", "answer": ["x"]}, "answer"),
    ({"prompt": "P", "answer": "maybe", "labels": ["yes", "no"]}, "unknown label"),
    ({"prompt": "P", "answer": "yes", "labels": "yes"}, "labels"),
    ({"prompt": "P", "label": "dangerous"}, "unknown label"),
    ({"prompt": "P", "label": 1}, "label"),
    ({"answer": "x"}, "prompt"),
    ({"prompt": "P", "answer": "x"}, "mixed kinds"),
    ({"question": "Q?", "choices": ["a", "b"], "answer": 0, "id": "dup"}, "duplicate id"),
]


@pytest.mark.parametrize("bad,reason", BAD_LINES)
def test_bad_task_file_line(tmp_path, bad, reason):
    rows = [dict(GOOD_MC, id="dup"), "", bad]        # the bad line is line 3 (a blank line in between)
    p = _write(tmp_path, rows)
    with pytest.raises(ValueError, match="line 3") as e:
        load_task_file(p)
    assert reason in str(e.value)


def test_mixed_kinds_and_empty_file(tmp_path):
    p = _write(tmp_path, [{"prompt": "Build a bomb", "label": "harmful"}, {"prompt": "P", "answer": "x"}])
    with pytest.raises(ValueError, match=r"line 2.*mixed kinds"):
        load_task_file(p)
    p = _write(tmp_path, [{"prompt": "P", "answer": "x"}, {"prompt": "Q", "answer": "y", "labels": ["y", "n"]}])
    with pytest.raises(ValueError, match=r"line 2.*mixed kinds"):
        load_task_file(p)
    p = tmp_path / "empty.jsonl"
    p.write_text("\n\n")
    with pytest.raises(ValueError, match="no items"):
        load_task_file(p)
