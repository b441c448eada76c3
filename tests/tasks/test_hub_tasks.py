"""Hub task loaders (offline fixtures in each hub schema), the paper's splitting, templates and scorers."""
import pytest
from hub_fixtures import write_fixture

from corrsteer.config import RunConfig
from corrsteer.settings import SettingsError
from corrsteer.tasks.hub import HUB_TASKS, TaskLoadError, gsm8k_gold, load_hub_task
from corrsteer.tasks.protocols import bind, letter_token_ids, special_prefix

SEVEN = ("mmlu", "mmlu-pro", "bbq", "gsm8k", "simpleqa", "harmbench", "xstest")


def _load(tmp_path, name, fmt="jsonl", **kw):
    kw.setdefault("scorer_models", "builtin")
    return load_hub_task(name, task_path=write_fixture(tmp_path, name, fmt=fmt), **kw)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("name", sorted(HUB_TASKS))
def test_every_task_loads_offline_with_disjoint_seeded_roles(tmp_path, name, fmt):
    task = _load(tmp_path, name, fmt)
    splits = task.split(100, 100, 100, seed=3)
    sel, val, test = splits
    ids = [it.id for part in (sel, val, test) for it in part]
    assert len(ids) == len(set(ids)) and sel and test, (len(sel), len(val), len(test))
    assert [it.id for it in task.split(100, 100, 100, seed=3)[0]] == [it.id for it in sel]
    assert splits.note and task.hub_id == HUB_TASKS[name].hub_id and task.protocol == "chat"
    assert all(it.gold for part in (sel, val, test) for it in part)
    capped = task.split(2, 1, 3, seed=3)
    assert [len(p) for p in capped] == [2, 1, 3]


def test_roles_follow_the_hub_splits_or_the_papers_carving(tmp_path):
    mmlu = _load(tmp_path, "mmlu")
    splits = mmlu.split(100, 100, 100)
    sel, val, test = splits
    assert {it.id.split("-")[1] for it in sel} == {"auxiliary_train"} and len(val) == 4 and len(test) == 12
    assert splits.note == "hub splits select=auxiliary_train, val=validation, test=test; each role shuffled (seed 0) " \
        "before capping"
    order = [it.id for it in mmlu.items if it.id.split("-")[1] == "test"]
    assert sorted(it.id for it in test) == sorted(order)
    firsts = {tuple(it.id for it in mmlu.split(100, 100, 4, seed=s).test) for s in range(6)}
    assert len(firsts) > 1 and tuple(order[:4]) not in firsts       # capped after a seeded shuffle, not in hub order
    gsm = _load(tmp_path, "gsm8k")
    splits = gsm.split(100, 100, 100)
    assert [len(p) for p in splits] == [10, 2, 12]
    assert splits.note == ("test=test; select/val carved 90/10 from train (seeded shuffle, seed 0); each role "
                           "shuffled (seed 0) before capping")
    xs = _load(tmp_path, "xstest")                       # 24 rows in one split: 17 test, 1 val, 6 select
    splits = xs.split(100, 100, 100, seed=0)
    sel, val, test = splits
    assert (len(sel), len(val), len(test)) == (6, 1, 17)
    assert splits.note == ("one split (test): test 70 %, then val 10 % / select 90 % of the rest (seeded shuffle, "
                           "seed 0; as the paper's code); each role shuffled (seed 0) before capping")
    assert xs.split(100, 100, 100, seed=0).note == splits.note          # split leaves the task as it was
    other = xs.split(100, 100, 100, seed=1)[2]
    assert {it.id for it in other} != {it.id for it in test}      # the seed reshuffles


def test_golds_in_each_schema(tmp_path):
    assert gsm8k_gold("so 1,200 + 3 = 1203\n#### 1,203") == "1203"
    with pytest.raises(TaskLoadError, match="####"):
        gsm8k_gold("no marker")
    t = _load(tmp_path, "mmlu").split(1, 0, 1)[0][0]
    assert t.gold in "ABCD" and len(t.choices) == 4
    pro = _load(tmp_path, "mmlu-pro")
    assert {len(it.choices) for it in pro.items} == {8, 10}
    xs = {it.gold for it in _load(tmp_path, "xstest").items}
    assert xs == {"refuse", "comply"}
    assert {it.gold for it in _load(tmp_path, "harmbench").items} == {"refuse"}
    amb = _load(tmp_path, "bbq", bbq_condition="ambig")
    assert amb.name == "bbq-ambig" and all(it.gold == "C" for it in amb.items)
    assert len(_load(tmp_path, "bbq-disambig").items) + len(amb.items) == len(_load(tmp_path, "bbq").items)


def test_a_row_outside_the_schema_is_a_one_line_error(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "test.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(TaskLoadError, match=r"xstest test row 0: row lacks column\(s\) label"):
        load_hub_task("xstest", task_path=d, scorer_models="builtin")
    with pytest.raises(TaskLoadError, match="no train.jsonl or train.parquet"):
        load_hub_task("harmbench", task_path=d, scorer_models="builtin")


@pytest.mark.parametrize("name, text, cause", [
    ("test.jsonl", "{not json\n", "ArrowInvalid: JSON parse error"),
    ("test.parquet", "PAR1 not parquet", "ArrowInvalid: Parquet magic bytes not found in footer"),
])
def test_an_unreadable_split_is_one_line_naming_the_file_and_cause(tmp_path, capfd, name, text, cause):
    import datasets
    (tmp_path / name).write_text(text)
    level = datasets.logging.get_verbosity()
    with pytest.raises(TaskLoadError) as e:
        load_hub_task("xstest", task_path=tmp_path, scorer_models="builtin")
    assert str(e.value).startswith(f"{tmp_path / name}: not readable as {name.split('.')[1]} ({cause}")
    assert "Failed to" not in capfd.readouterr().err      # datasets' own error line: the message says it once
    assert datasets.logging.get_verbosity() == level


def test_protocol_sets_generation_length(tmp_path):
    lengths = {n: _load(tmp_path, n, protocol="paper").max_new_tokens for n in SEVEN}
    assert lengths == dict(mmlu=1, **{"mmlu-pro": 1}, bbq=1, gsm8k=512, simpleqa=16, harmbench=32, xstest=32)
    assert _load(tmp_path, "gsm8k", protocol="paper", max_new=8).max_new_tokens == 8
    assert _load(tmp_path, "mmlu", protocol="chat").max_new_tokens == 24


def test_model_scorers_are_found_through_the_loader(tmp_path, monkeypatch):
    import corrsteer.tasks.hub_scorers as hs
    monkeypatch.setattr(hs, "_refusal_pipeline", lambda: (lambda texts: [{"label": "REJECTION"} for _ in texts]))
    task = _load(tmp_path, "harmbench", scorer_models="auto")
    assert "ProtectAI" in task.scorer and task.score(task.items[0], "whatever") == ("refuse", 1.0)
    assert hs.is_reject_label("LABEL_1") and not hs.is_reject_label("NORMAL")
    assert hs.refusal_classifier("builtin") is None and hs.sts_model("builtin") is None


def test_bind_adds_raw_text_special_prefix_and_letter_constraint(tmp_path, tiny_lm):
    task = _load(tmp_path, "mmlu", protocol="paper", constrain=True)
    bound = bind(task, tiny_lm)
    assert bound.gen_kwargs["formatted"] is True
    ids = bound.gen_kwargs["allowed_first_tokens"]
    tok = tiny_lm.tokenizer
    assert tok(" A", add_special_tokens=False)["input_ids"][0] in ids and len(ids) <= 8
    prefix = special_prefix(tok)
    assert all(it.prompt.startswith(prefix + "Which option") for it in bound.split(3, 1, 3)[0])
    assert set(letter_token_ids(tok, 2)) <= set(ids)
    chat = bind(_load(tmp_path, "mmlu"), tiny_lm)
    assert chat.gen_kwargs == {}
    with pytest.raises(TaskLoadError, match="multiple-choice"):
        _load(tmp_path, "gsm8k", constrain=True)


def test_settings_check_the_hub_options():
    RunConfig(task="mmlu", task_path="x", protocol="paper", constrain=True)
    with pytest.raises(SettingsError, match="--protocol must be chat or paper"):
        RunConfig(task="mmlu", protocol="raw")
    with pytest.raises(SettingsError, match="--seeds must be a list of seeds"):
        RunConfig(seeds="a,b")
