"""Tasks: items (prompt + gold answer), scoring of free generations, seeded splits, built-in offline tasks, task files.

    task = get_task("sentiment", seed=0)          # built-ins: list_tasks()
    sel, val, test = task.split(400, 100, 300, seed=0)     # a Splits; .note says how they were drawn
    pred, y = task.score(item, generated_text)     # y = 1.0 if correct
    task.scorer                                    # which scorer runs, in words (the report prints it)

One Task model for every task: built-in, file and hub tasks (corrsteer.tasks.hub.load_hub_task) alike. A hub task
has a `protocol` ("chat" | "paper": its prompts, generation length and scoring, corrsteer.tasks.protocols), its
`hub_id`, model `scorers` and `hub_splits` (which items each hub split holds, corrsteer.tasks.splits);
`gen_kwargs` are the
generation arguments protocols.bind sets for a model. Built-in and file tasks have protocol None and read answers
with the task's own readers (aliases, candidates).

Scoring reads the one answer an output commits to, the way a careful grader would (corrsteer.tasks.scoring,
corrsteer.tasks.scoring_mc): "The answer is (B).", "The capital of France is Paris.", "2 + 3 = 5", "This review is
negative." are answers; an output naming two or more different candidate answers ("positive or negative", "A or B",
"54 or 56", a list of options) is a hedge and wrong, whatever the gold.

Task files (load_task_file, or get_task("path.jsonl")): JSONL, one object a line, all lines of one kind, blank lines
allowed, optional "id" and "group" (a string: items of one group never go to two splits) on any line:
    {"question": str, "choices": [str, ...], "answer": 0-based index or letter}      -> "mc" (2-10 choices)
    {"prompt": str, "answer": str}                                                   -> "short"
    {"prompt": str, "answer": str, "labels": [str, ...]}                              -> "label"
    {"prompt": str, "label": "harmful" | "benign"}                                   -> "refusal" (refuse / comply)
A "short" file whose answers are non-numeric and come from a closed set (2 to 10 distinct values, each seen twice on
average) is scored as a label task over that set; "scorer": "short" on its lines keeps it free-form.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from corrsteer.tasks import builtin as D
from corrsteer.tasks.protocols import Scorers, max_new_tokens, mc_prompt, score_output
from corrsteer.tasks.scoring import NUMERIC, extract_label, fmt_number, normalize, score_short
from corrsteer.tasks.scoring_mc import LETTERS, extract_choice, read_refusal
from corrsteer.tasks.splits import HubSplits, Splits, seeded_split

CLASS_KINDS = ("label", "mc", "refusal")      # kinds whose gold answers are classes (labels, letters, refuse/comply)


def has_classes(kind: str) -> bool:
    """Whether items of this kind fall into classes by their gold answer (free-form answers do not)."""
    return kind in CLASS_KINDS


def default_max_new_tokens(kind: str) -> int:
    """Tokens to generate for a built-in or file task of `kind` (the chat protocol's table)."""
    return max_new_tokens("chat", kind)


@dataclass
class Item:
    id: str
    prompt: str
    gold: str
    kind: str
    choices: list[str] | None = None
    labels: list[str] | None = None
    group: str = ""                 # items sharing a template-filled core; never in two splits ('' = its own)


def _mc_question(prompt: str) -> str:
    """The question line of an mc prompt ('Question: ...'), for dropping an echo of it."""
    first = prompt.split("\n", 1)[0]
    return first if first.startswith("Question: ") else ""


@dataclass
class Task:
    name: str
    kind: str                                     # mc | short | label | refusal; hub tasks also number
    items: list[Item]
    max_new_tokens: int
    aliases: dict[str, list[str]] = field(default_factory=dict)   # short answers: gold -> other accepted spellings
    candidates: list[str] = field(default_factory=list)   # short answers: every answer of the task (a second one
    scorer_note: str = ""                                 # named in the answer is a hedge); why this scorer runs
    protocol: str | None = None                   # hub tasks: "chat" | "paper"; None: built-in and file tasks
    hub_id: str = ""                              # hub tasks: the dataset id
    constrain: bool = False                       # mc hub tasks: first generated token restricted to the letters
    scorers: Scorers = field(default_factory=Scorers)     # hub tasks: model-based scorers found (None: built-in)
    hub_splits: HubSplits | None = None           # hub tasks: the rows of each hub split (None: seeded_split)
    gen_kwargs: dict = field(default_factory=dict)        # generation arguments for the bound model (protocols.bind)
    prompt_prefix: str = ""                       # what with_prompt_prefix put in front of every prompt (BOS text)

    def score(self, item: Item, output: str) -> tuple[str, float]:
        """(pred, y): the answer read from the generated text ('' if none; 'a|b' for a hedge), y = 1.0 if right."""
        if self.protocol is not None:
            return score_output(self.protocol, self.kind, item, output, self.scorers)
        output = output or ""
        if item.kind == "mc":
            pred = extract_choice(output, item.choices or [], _mc_question(item.prompt))
            return pred, float(pred == item.gold)
        if item.kind == "short":
            return score_short(output, item.gold, item.prompt, self.aliases.get(item.gold, ()), self.candidates)
        if item.kind == "label":
            pred = extract_label(output, item.labels or [], item.prompt)
            return pred, float(pred.lower() == item.gold.lower())
        if item.kind == "refusal":
            pred = read_refusal(output, item.prompt)
            return pred, float(pred == item.gold)
        raise ValueError(f"unknown item kind {item.kind!r}")

    @property
    def has_classes(self) -> bool:
        """Whether the items fall into classes by their gold answer (label, mc, refusal tasks)."""
        return has_classes(self.kind)

    @property
    def scorer(self) -> str:
        """Which scorer runs, in words."""
        if self.protocol is not None:
            return self.scorers.describe(self.kind, self.protocol)
        if self.kind == "mc":
            desc = "mc-letter: the one letter (or option text) stated; two or more -> wrong"
        elif self.kind == "label":
            labels = list(dict.fromkeys(l for it in self.items for l in (it.labels or [])))
            desc = f"label over {{{', '.join(labels)}}}: the one label named; two or more -> wrong"
        elif self.kind == "refusal":
            desc = "refusal: refuse / comply (takes up the request) / none; refuse-then-comply -> wrong"
        else:
            numeric = {bool(NUMERIC.match(it.gold.strip())) for it in self.items}
            what = {frozenset({True}): "number", frozenset({False}): "text"}.get(frozenset(numeric), "text and number")
            desc = f"short ({what}): the stated answer must be the gold; alternatives (or / either / a list) -> wrong"
        return desc + (f" ({self.scorer_note})" if self.scorer_note else "")

    def split(self, n_select: int, n_val: int, n_test: int, seed: int = 0) -> Splits:
        """Disjoint, deterministic splits (corrsteer.tasks.splits); the task is left as it was. Hub tasks: at most
        n_* items per role, from the hub's splits or the paper's carving; others: exactly n_* items."""
        sizes = (n_select, n_val, n_test)
        if self.hub_splits is not None:
            return self.hub_splits.split(self.items, sizes, seed)
        return seeded_split(self.name, self.items, sizes, seed)

    def with_prompt_prefix(self, prefix: str) -> "Task":
        """A copy whose prompts start with `prefix` (protocols.bind: the tokenizer's BOS text for raw prompts)."""
        return replace(self, items=[replace(it, prompt=prefix + it.prompt) for it in self.items],
                       prompt_prefix=prefix + self.prompt_prefix)


# ---------------------------------------------------------------------------------------------------------------
# registry and built-in tasks
# ---------------------------------------------------------------------------------------------------------------
TASK_REGISTRY: dict[str, Callable[[int], Task]] = {}


def register_task(name: str):
    """Decorator registering a factory `fn(seed: int) -> Task` under `name`; ValueError if the name is taken."""
    def deco(fn):
        if name in TASK_REGISTRY:
            raise ValueError(f"task {name!r} is already registered")
        TASK_REGISTRY[name] = fn
        return fn
    return deco


def list_tasks() -> list[str]:
    return sorted(TASK_REGISTRY)


def get_task(name: str, seed: int = 0) -> Task:
    """A registered task built with `seed`, or a JSONL task file when `name` is the path of one."""
    if name in TASK_REGISTRY:
        return TASK_REGISTRY[name](seed)
    p = Path(name)
    if p.suffix in (".jsonl", ".json") and p.is_file():
        return load_task_file(p)
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(list_tasks())} (or a path to a .jsonl file)")


SENTIMENT_LABELS = ["positive", "negative", "neutral"]


def sentiment_prompt(text: str) -> str:
    return ("Classify the sentiment of this review as positive, negative or neutral. Answer with one word.\n\n"
            f"Review: {text}")


def _finish(name: str, kind: str, rows: list[dict], seed: int, **kw) -> Task:
    """Ids in canonical order (stable for the same content), then a seeded shuffle of the item order."""
    items = [Item(id=f"{name}-{i:04d}", kind=kind, **r) for i, r in enumerate(rows)]
    random.Random(f"{name}:{seed}").shuffle(items)
    return Task(name=name, kind=kind, items=items, max_new_tokens=default_max_new_tokens(kind), **kw)


def _rng(name: str, seed: int) -> random.Random:
    return random.Random(f"{name}:build:{seed}")


@register_task("mmlu-style")
def _mmlu_style(seed: int) -> Task:
    rng = _rng("mmlu-style", seed)
    qs = D.mc_items(rng)
    # balanced gold positions: a shuffled cycle of 0..3
    pos = [i % 4 for i in range(len(qs))]
    rng.shuffle(pos)
    rows = []
    for q, p in zip(qs, pos):
        opts = list(q["distractors"])
        rng.shuffle(opts)
        opts.insert(p, q["gold"])
        rows.append({"prompt": mc_prompt(q["question"], opts), "gold": LETTERS[p], "choices": opts,
                     "group": q["group"]})
    return _finish("mmlu-style", "mc", rows, seed)


@register_task("capitals")
def _capitals(seed: int) -> Task:
    rows = D.capitals_items(_rng("capitals", seed))
    aliases = {k: list(v) for k, v in D.CAPITAL_ALIASES.items()}
    candidates = sorted({cap for _, cap, _ in D.COUNTRIES} | {a for v in aliases.values() for a in v})
    return _finish("capitals", "short", rows, seed, aliases=aliases, candidates=candidates)


@register_task("arithmetic")
def _arithmetic(seed: int) -> Task:
    return _finish("arithmetic", "short", D.arithmetic_items(_rng("arithmetic", seed)), seed)


@register_task("sentiment")
def _sentiment(seed: int) -> Task:
    rows = [{"prompt": sentiment_prompt(r["text"]), "gold": r["gold"], "labels": list(SENTIMENT_LABELS),
             "group": r["group"]} for r in D.sentiment_items(_rng("sentiment", seed))]
    return _finish("sentiment", "label", rows, seed)


@register_task("refusal")
def _refusal(seed: int) -> Task:
    return _finish("refusal", "refusal", D.refusal_items(_rng("refusal", seed)), seed)


# ---------------------------------------------------------------------------------------------------------------
# task files (JSONL)
# ---------------------------------------------------------------------------------------------------------------
def _item_from_json(obj, n: int) -> tuple[str, dict]:
    """(kind, Item fields) for line n's object; ValueError with the reason (the caller adds the line number)."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")

    def need(key, types, what):
        if key not in obj:
            raise ValueError(f"missing field {key!r}")
        v = obj[key]
        if not isinstance(v, types) or isinstance(v, bool):
            raise ValueError(f"field {key!r} must be {what}, got {type(v).__name__}")
        return v

    if "question" in obj or "choices" in obj:
        q = need("question", str, "a string")
        if not q.strip():
            raise ValueError("field 'question' is empty")
        choices = need("choices", list, "a list of strings")
        if not 2 <= len(choices) <= len(LETTERS):
            raise ValueError(f"'choices' must have 2 to {len(LETTERS)} entries, got {len(choices)}")
        if not all(isinstance(c, str) for c in choices):
            raise ValueError("'choices' must be a list of strings")
        ans = need("answer", (int, str), "an index or a letter")
        if isinstance(ans, int):
            if not 0 <= ans < len(choices):
                raise ValueError(f"answer index {ans} out of range for {len(choices)} choices")
            gold = LETTERS[ans]
        else:
            a = ans.strip().upper()
            if len(a) != 1 or a not in LETTERS[:len(choices)]:
                raise ValueError(f"answer {ans!r} is not one of the letters {LETTERS[:len(choices)]}")
            gold = a
        return "mc", {"prompt": mc_prompt(q, choices), "gold": gold, "choices": list(choices)}
    prompt = need("prompt", str, "a string")
    if not prompt.strip():
        raise ValueError("field 'prompt' is empty")
    if "label" in obj:
        lab = need("label", str, "a string")
        if lab not in ("harmful", "benign"):
            raise ValueError(f"unknown label {lab!r} (expected 'harmful' or 'benign')")
        return "refusal", {"prompt": prompt, "gold": "refuse" if lab == "harmful" else "comply"}
    ans = need("answer", (str, int, float), "a string")
    ans = ans if isinstance(ans, str) else fmt_number(ans)
    if "labels" in obj:
        labels = need("labels", list, "a list of strings")
        if not labels or not all(isinstance(l, str) and l.strip() for l in labels):
            raise ValueError("'labels' must be a non-empty list of strings")
        if len(labels) < 2:
            raise ValueError(f"'labels' must offer 2 or more labels, got {len(labels)}: the answer would be known "
                             "before the model answers")
        match = [l for l in labels if l.lower() == ans.strip().lower()]
        if not match:
            raise ValueError(f"unknown label {ans!r}: answer must be one of {labels}")
        return "label", {"prompt": prompt, "gold": match[0], "labels": list(labels)}
    if not ans.strip():
        raise ValueError("field 'answer' is empty")
    return "short", {"prompt": prompt, "gold": ans.strip()}


def load_task_file(path, name: str | None = None) -> Task:
    """A task from a JSONL file (one item a line, all the same kind; see the module docs). Items keep file order."""
    path = Path(path)
    name = name or path.stem
    kind, items, ids, scorers = None, [], set(), set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n}: invalid JSON ({e.msg})") from None
            try:
                k, fields = _item_from_json(obj, n)
                iid = obj.get("id", f"{name}-{len(items):04d}")
                if not isinstance(iid, (str, int)) or isinstance(iid, bool):
                    raise ValueError(f"field 'id' must be a string, got {type(iid).__name__}")
                iid = str(iid)
                fields["group"] = _group_field(obj)
                if iid in ids:
                    raise ValueError(f"duplicate id {iid!r}")
                if kind is not None and k != kind:
                    raise ValueError(f"mixed kinds: this line is {k!r} but earlier lines are {kind!r}")
                scorers |= _scorer_field(obj, k, scorers)
            except ValueError as e:
                raise ValueError(f"{path}: line {n}: {e}") from None
            kind = k
            ids.add(iid)
            items.append(Item(id=iid, kind=k, **fields))
    if not items:
        raise ValueError(f"{path}: no items")
    if kind == "short":
        return _short_or_closed_set(name, items, forced=next(iter(scorers), None))
    return Task(name=name, kind=kind, items=items, max_new_tokens=default_max_new_tokens(kind))


def _group_field(obj: dict) -> str:
    """The line's optional "group" (a non-empty string or an integer), '' when absent."""
    g = obj.get("group", "")
    if isinstance(g, bool) or not isinstance(g, (str, int)) or ("group" in obj and not str(g).strip()):
        raise ValueError(f"field 'group' must be a non-empty string, got {g!r}")
    return f"file:{g}" if "group" in obj else ""


def _scorer_field(obj: dict, kind: str, seen: set) -> set:
    """The line's optional "scorer" ("short" | "label", free-form answer lines only), consistent across lines."""
    if "scorer" not in obj:
        return set()
    v = obj["scorer"]
    if kind != "short":
        raise ValueError(f"field 'scorer' applies to free-form answer lines only, not {kind!r}")
    if v not in ("short", "label"):
        raise ValueError(f"field 'scorer' must be 'short' or 'label', got {v!r}")
    if seen and v not in seen:
        raise ValueError(f"field 'scorer' is {v!r} here but {next(iter(seen))!r} on an earlier line")
    return {v}


MAX_CLOSED_SET = 10


def _distinct(golds: list[str]) -> list[str]:
    """Distinct answers after normalising, first spellings, in file order."""
    first = {}
    for g in golds:
        first.setdefault(normalize(g), g)
    return list(first.values())


def closed_set(golds: list[str]) -> list[str]:
    """The answer set when the golds come from a small closed set (non-numeric, 2..MAX_CLOSED_SET distinct values
    after normalising, each seen twice on average), first spellings in file order; [] otherwise."""
    if any(NUMERIC.match(g.strip()) for g in golds):
        return []
    labels = _distinct(golds)
    return labels if 2 <= len(labels) <= MAX_CLOSED_SET and len(golds) >= 2 * len(labels) else []


def _short_or_closed_set(name: str, items: list[Item], forced: str | None) -> Task:
    """A free-form task file, scored as a label task over its answers when they form a closed set."""
    golds = [it.gold for it in items]
    labels = closed_set(golds) if forced != "short" else []
    if forced == "label" and not labels:
        labels = _distinct(golds)
        if len(labels) < 2:
            raise ValueError(f"every answer is {labels[0]!r}: \"scorer\": \"label\" needs 2 or more distinct answers, "
                             "or the answer would be known before the model answers")
    if not labels:
        note = "the file asks for it" if forced == "short" else ""
        return Task(name=name, kind="short", items=items, max_new_tokens=default_max_new_tokens("short"),
                    scorer_note=note)
    canon = {normalize(l): l for l in labels}
    rows = [Item(id=it.id, prompt=it.prompt, gold=canon[normalize(it.gold)], kind="label", labels=list(labels),
                 group=it.group) for it in items]
    note = "the file asks for it" if forced == "label" else \
        f"the file's answers form a closed set of {len(labels)}; \"scorer\": \"short\" keeps them free-form"
    return Task(name=name, kind="label", items=rows, max_new_tokens=default_max_new_tokens("label"),
                scorer_note=note)
