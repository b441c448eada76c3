"""Grouped splits: no group (paraphrases of one request, one country, ...) crosses select / val / test for any
built-in task or a task file with "group" fields; few-shot examples avoid test groups; a plan records its run's
split and `eval` refuses a test split that overlaps it."""
import json
import random
from types import SimpleNamespace

import pytest

from corrsteer.model.steer import PlanEntry, SteeringPlan
from corrsteer.pipeline.prompting import few_shot_examples
from corrsteer.settings import SettingsError
from corrsteer.tasks.load import check_plan_split, check_split
from corrsteer.tasks.splits import seeded_split, split_record
from corrsteer.tasks.task import Item, get_task, list_tasks, load_task_file

SIZES = [(192, 48, 192, 0), (192, 48, 192, 1), (400, 100, 300, 3), (48, 16, 48, 0)]


def _groups(items) -> set:
    return {it.group for it in items}          # the items' own field (group_of could hide a bug it shares)


@pytest.mark.parametrize("name", list_tasks())
def test_no_test_item_shares_a_group_with_select_or_val(name):
    task = get_task(name)
    assert all(it.group for it in task.items)                       # every built-in item has a group
    for n_sel, n_val, n_test, seed in SIZES:
        sel, val, test = task.split(n_sel, n_val, n_test, seed=seed)
        assert (len(sel), len(val), len(test)) == (n_sel, n_val, n_test)
        assert not _groups(test) & _groups(sel + val), (name, seed)
        assert not _groups(val) & _groups(sel), (name, seed)
        assert [it.id for it in task.split(n_sel, n_val, n_test, seed=seed).test] == [it.id for it in test]


def test_groups_are_the_template_cores():
    refusal = get_task("refusal")
    by_group = {}
    for it in refusal.items:
        by_group.setdefault(it.group, []).append(it)
    assert len(by_group) == 100 and {len(v) for v in by_group.values()} == {12}
    assert all(len({it.gold for it in v}) == 1 for v in by_group.values())
    capitals = {}
    for it in get_task("capitals").items:
        capitals.setdefault(it.group, set()).add(it.gold)
    assert all(len(golds) == 1 for golds in capitals.values()) and "country:France" in capitals
    arith = {it.prompt: it.group for it in get_task("arithmetic").items}
    pairs = [g for p, g in arith.items() if p in ("What is 3 + 4?", "Add 4 and 3.")]
    assert len(set(pairs)) <= 1
    mc = [it for it in get_task("mmlu-style").items if "France" in it.prompt.split("\n")[0]]
    assert len({it.group for it in mc}) == 1 and len(mc) >= 3       # capital, continent, capital-of, currency
    sentiment = get_task("sentiment").items
    assert all(it.group.split("|")[1] in it.prompt for it in sentiment)


def test_a_split_that_ignores_groups_is_caught():
    """The check above fails on a plain item shuffle (what the splits were before grouping)."""
    items = [Item(id=it.id, prompt=it.prompt, gold=it.gold, kind=it.kind) for it in get_task("refusal").items]
    sel, val, test = seeded_split("refusal", items, (192, 48, 192), 0)
    ref = {it.id: it.group for it in get_task("refusal").items}
    assert {ref[it.id] for it in test} & {ref[it.id] for it in sel + val}


def test_ungrouped_file_tasks_keep_the_plain_seeded_shuffle(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(30)))
    task = load_task_file(p)
    order = list(range(30))
    random.Random("split:5").shuffle(order)
    assert [it.id for it in sum(task.split(10, 5, 10, seed=5), [])] == [task.items[i].id for i in order[:25]]


def test_task_file_groups_stay_in_one_split(tmp_path):
    p = tmp_path / "g.jsonl"
    rows = [{"prompt": f"q{i} phrasing {k}", "answer": str(i), "group": f"g{i}"} for i in range(20) for k in range(3)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task_file(p)
    for seed in range(5):
        sel, val, test = task.split(20, 7, 20, seed=seed)
        assert (len(sel), len(val), len(test)) == (20, 7, 20)
        assert not {it.group for it in test} & {it.group for it in sel + val}
    with pytest.raises(ValueError, match="no group in two splits"):
        task.split(31, 0, 29)                                  # 60 items, but whole groups cannot give 31 + 29
    cfg = SimpleNamespace(n_select=31, n_val=0, n_test=29, seed=0)
    with pytest.raises(SettingsError, match=r"^--n-select 31 \+ --n-val 0 \+ --n-test 29: task 'g' has 60 items in "
                                            r"20 groups.*expected smaller splits$"):
        check_split(task, cfg)


@pytest.mark.parametrize("bad", [[], "", True, {"a": 1}, 1.5])
def test_a_bad_group_field_is_one_line_with_its_line_number(tmp_path, bad):
    p = tmp_path / "b.jsonl"
    p.write_text(json.dumps({"prompt": "q", "answer": "a"}) + "\n" + json.dumps({"prompt": "r", "answer": "b",
                                                                                 "group": bad}) + "\n")
    with pytest.raises(ValueError, match=r"line 2: field 'group' must be a non-empty string"):
        load_task_file(p)


def test_few_shot_avoids_the_test_groups():
    items = [Item(id=f"i{k}", prompt=f"p{k}", gold="ab"[k % 2], kind="label", labels=["a", "b"], group=f"g{k // 2}")
             for k in range(12)]
    sel, test = items[:8], items[7:]                 # i6 and i7 (group g3) would be a paraphrase of test item i7
    for seed in range(10):
        shots = few_shot_examples(sel, 8, seed, test)
        assert {s.id for s in shots} == {f"i{k}" for k in range(6)}
    assert len(few_shot_examples(sel, 8, 0)) == 8


def _record_cfg(task, n_sel, n_val, n_test, seed):
    splits = task.split(n_sel, n_val, n_test, seed=seed)
    return split_record(task.name, splits, (n_sel, n_val, n_test), seed)


def test_eval_refuses_a_test_split_overlapping_the_runs_select_and_val():
    task = get_task("capitals")
    rec = _record_cfg(task, 192, 48, 192, 0)
    check_plan_split(task, rec, SimpleNamespace(n_select=192, n_val=48, n_test=192, seed=0))      # the run's own
    check_plan_split(task, {}, SimpleNamespace(n_select=8, n_val=8, n_test=192, seed=1))           # no record
    check_plan_split(get_task("sentiment"), rec, SimpleNamespace(n_select=8, n_val=8, n_test=192, seed=1))
    with pytest.raises(SettingsError, match=r"^--plan: \d+ of the 192 test items .* share a group with, the plan's "
                                            r"select/val items \(the run used --n-select 192 --n-val 48 --n-test 192 "
                                            r"--seed 0\), expected a test split disjoint from them: pass the run's "
                                            r"sizes and seed$"):
        check_plan_split(task, rec, SimpleNamespace(n_select=48, n_val=16, n_test=192, seed=0))
    with pytest.raises(SettingsError, match="share a group"):
        check_plan_split(task, rec, SimpleNamespace(n_select=192, n_val=48, n_test=192, seed=1))
    with pytest.raises(SettingsError, match="cannot be drawn again"):
        check_plan_split(task, dict(rec, select_val_sha256="0" * 64),
                         SimpleNamespace(n_select=192, n_val=48, n_test=192, seed=0))


def test_a_plan_keeps_its_split_record(tmp_path):
    rec = _record_cfg(get_task("refusal"), 24, 12, 24, 2)
    plan = SteeringPlan("P", "m", "trained", [PlanEntry(1, "blocks.1.hook_resid_post", [3], [1.0])],
                        {"blocks.1.hook_resid_post": [0.0, 1.0]}, split=rec)
    back = SteeringPlan.load(plan.save(tmp_path / "plan.json"))
    assert back.split == rec and rec["n_select"] == 24 and rec["seed"] == 2 and len(rec["select_val_sha256"]) == 64


def test_grouped_splits_keep_the_class_mix():
    """refusal's 50 harmful and 50 benign requests are interleaved, so a split of 16 requests is 8 + 8 (a plain
    shuffle of the requests gave 132 refuse / 60 comply on seed 0's test split)."""
    task = get_task("refusal")
    for seed in range(4):
        for part in task.split(192, 48, 192, seed=seed):
            refuse = sum(it.gold == "refuse" for it in part)
            assert abs(2 * refuse - len(part)) <= 12, (seed, refuse, len(part))
