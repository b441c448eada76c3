"""Prompting baselines: the instruction per task kind, few-shot examples from the select split only, the prompted
item keeps the tokenizer's prefix, and scoring reads the original item."""
import dataclasses

from corrsteer.pipeline.prompting import (
    COMPLY_ANSWER,
    QUESTION,
    REFUSE_ANSWER,
    ScoredAsOriginal,
    few_shot_examples,
    instruction,
    prompt_set,
    prompted,
)
from corrsteer.tasks.task import get_task


def test_instruction_per_kind():
    assert instruction(get_task("sentiment"), get_task("sentiment").items) == \
        "Answer with exactly one of: positive, negative, neutral."
    mc = get_task("mmlu-style")
    assert instruction(mc, mc.items) == "Answer with the letter of the correct option: A, B, C or D."
    assert instruction(get_task("capitals"), []) == "Answer with the answer only."
    assert "harm" in instruction(get_task("refusal"), [])


def test_few_shot_from_the_select_split_only_seeded_and_class_covering():
    task = get_task("sentiment")
    sel, val, test = task.split(60, 20, 40, seed=0)
    shots = few_shot_examples(sel, 3, seed=0)
    assert len(shots) == 3 and all(s in sel for s in shots)
    assert {s.gold for s in shots} == {"positive", "negative", "neutral"} & {it.gold for it in sel}
    assert [s.id for s in shots] == [s.id for s in few_shot_examples(list(sel), 3, seed=0)]
    assert [s.id for s in shots] != [s.id for s in few_shot_examples(sel, 3, seed=1)]
    ps = prompt_set(task, sel, 3, seed=0)
    assert ps.few_shot_ids == [s.id for s in shots] and ps.few_shot.endswith(QUESTION)
    for it in val + test:                                   # no validation or test item in the examples
        assert it.prompt not in ps.few_shot and it.id not in ps.few_shot_ids
    for s in shots:
        assert f"{s.prompt}\nAnswer: {s.gold}" in ps.few_shot


def test_few_shot_k_zero_and_refusal_answers():
    task = get_task("refusal")
    sel, _, _ = task.split(30, 5, 5)
    assert prompt_set(task, sel, 0, 0).few_shot == "" and "few-shot" not in prompt_set(task, sel, 0, 0).texts()
    ps = prompt_set(task, sel, 4, 0)
    assert REFUSE_ANSWER in ps.few_shot and COMPLY_ANSWER in ps.few_shot


def test_raw_text_prompts_keep_the_prefix_in_front():
    mc = get_task("mmlu-style")
    ends = [dataclasses.replace(it, prompt=it.prompt + "\nAnswer:") for it in mc.items[:5]]
    raw = dataclasses.replace(mc, items=ends, protocol="paper")
    task = raw.with_prompt_prefix("<s>")                     # as protocols.bind does for a raw-text protocol
    items = task.items
    ps = prompt_set(task, items, 2, 0)
    assert ps.prompting.startswith("Answer with the letter") and ps.prompting.endswith(QUESTION)
    it = prompted(task, items[4], ps.few_shot)
    assert it.prompt.startswith("<s>") and it.prompt.count("<s>") == 1 and it.prompt.endswith("\nAnswer:")
    assert f"Answer: {items[0].gold}" in it.prompt or f"Answer: {items[1].gold}" in it.prompt


def test_scored_as_original_reads_the_original_prompt():
    task = get_task("mmlu-style")
    item = task.items[0]
    wrapped = ScoredAsOriginal(task, [item])
    long = prompted(task, item, "Question: something else entirely\n\n" + QUESTION)
    assert wrapped.name == task.name and wrapped.kind == task.kind
    out = f"The answer is {item.gold}."
    assert wrapped.score(long, out) == task.score(item, out) == (item.gold, 1.0)
