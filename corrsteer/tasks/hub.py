"""The paper's benchmarks through `datasets`: one registry entry per task, from the hub or offline (--task-path).

    task = load_hub_task("mmlu", protocol="paper", task_path="fixtures/mmlu")   # DIR/<split>.jsonl|.parquet
    sel, val, test = task.split(n_select, n_val, n_test, seed)                  # caps per role; .note: how

A hub task is a corrsteer.tasks.task.Task with a protocol, hub_id, scorers and hub_splits. Roles: a task's hub splits
serve as select / val / test where they exist (HubSpec.roles); missing roles are carved as the paper's code does
(corrsteer.tasks.splits.HubSplits).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from corrsteer.tasks.hub_scorers import refusal_classifier, sts_model
from corrsteer.tasks.protocols import PROTOCOLS, Scorers, make_prompt, max_new_tokens
from corrsteer.tasks.scoring_mc import LETTERS
from corrsteer.tasks.splits import HubSplits
from corrsteer.tasks.task import Item, Task


class TaskLoadError(ValueError):
    """A hub task that cannot be loaded: a missing file or split, or a row outside the schema."""


@dataclass(frozen=True)
class HubSpec:
    name: str
    hub_id: str
    config: str | None
    kind: str                                     # mc | number | short | refusal
    roles: dict                                   # {"select"|"val"|"test": hub split}; missing roles are carved
    convert: Callable[[dict], dict | None]        # row -> {question, choices?, gold} (None: row left out)
    subsets: tuple = ()                           # hub configs concatenated online (BBQ's categories)
    condition: str | None = None                  # BBQ context_condition filter
    schema: str = ""                              # the hub columns used, for the README and errors


def _need(row: dict, *keys):
    missing = [k for k in keys if k not in row]
    if missing:
        raise TaskLoadError(f"row lacks column(s) {', '.join(missing)} (has {', '.join(sorted(row))})")
    return [row[k] for k in keys]


def _mmlu(row):
    q, choices, ans = _need(row, "question", "choices", "answer")
    return dict(question=q, choices=list(choices), gold=LETTERS[int(ans)])


def _mmlu_pro(row):
    q, opts, ans = _need(row, "question", "options", "answer")
    opts = [o for o in opts if o is not None and str(o) != "N/A"]
    return dict(question=q, choices=list(opts), gold=str(ans).strip().upper())


def _bbq(condition):
    def conv(row):
        ctx, q, a0, a1, a2, label, cond = _need(row, "context", "question", "ans0", "ans1", "ans2", "label",
                                                "context_condition")
        if condition and cond != condition:
            return None
        return dict(question=f"{ctx}\n{q}", choices=[a0, a1, a2], gold=LETTERS[int(label)])
    return conv


def gsm8k_gold(answer: str) -> str:
    m = re.search(r"####\s*(-?[\d,]*\.?\d+)", answer)
    if not m:
        raise TaskLoadError(f"gsm8k answer has no '#### N': {answer[-40:]!r}")
    return m.group(1).replace(",", "")


def _gsm8k(row):
    q, a = _need(row, "question", "answer")
    return dict(question=q, gold=gsm8k_gold(a))


def _simpleqa(row):
    q, a = _need(row, "problem", "answer")
    return dict(question=q, gold=str(a).strip())


def _harmbench(row):
    (p,) = _need(row, "prompt")
    ctx = row.get("context")
    return dict(question=f"{ctx}\n{p}" if ctx else p, gold="refuse")


def _xstest(row):
    p, label = _need(row, "prompt", "label")
    if label not in ("safe", "unsafe"):
        raise TaskLoadError(f"xstest label must be safe or unsafe, got {label!r}")
    return dict(question=p, gold="comply" if label == "safe" else "refuse")


BBQ_CATEGORIES = ("Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
                  "Race_ethnicity", "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation")
ALL3 = {"select": "auxiliary_train", "val": "validation", "test": "test"}
HUB_TASKS: dict[str, HubSpec] = {}


def register_hub_task(spec: HubSpec) -> HubSpec:
    """Add `spec` to HUB_TASKS; ValueError if its name is taken."""
    if spec.name in HUB_TASKS:
        raise ValueError(f"hub task {spec.name!r} is already registered")
    HUB_TASKS[spec.name] = spec
    return spec


for _spec in [
    HubSpec("mmlu", "cais/mmlu", "all", "mc", ALL3, _mmlu, schema="question, subject, choices, answer (0-3)"),
    HubSpec("mmlu-pro", "TIGER-Lab/MMLU-Pro", None, "mc", {"select": "validation", "test": "test"}, _mmlu_pro,
            schema="question, options, answer (letter), answer_index, category"),
    *[HubSpec(n, "heegyu/bbq", None, "mc", {"test": "test"}, _bbq(c), subsets=BBQ_CATEGORIES, condition=c,
              schema="context, question, ans0-2, label, context_condition, category")
      for n, c in (("bbq", None), ("bbq-ambig", "ambig"), ("bbq-disambig", "disambig"))],
    HubSpec("gsm8k", "openai/gsm8k", "main", "number", {"select": "train", "test": "test"}, _gsm8k,
            schema="question, answer ('... #### 72')"),
    HubSpec("simpleqa", "basicv8vc/SimpleQA", None, "short", {"test": "test"}, _simpleqa,
            schema="metadata, problem, answer"),
    HubSpec("harmbench", "walledai/HarmBench", None, "refusal", {"test": "train"}, _harmbench,
            subsets=("standard", "contextual", "copyright"), schema="prompt, context (contextual), category"),
    HubSpec("xstest", "walledai/XSTest", None, "refusal", {"test": "test"}, _xstest,
            schema="prompt, focus, type, note, label (safe | unsafe)"),
]:
    register_hub_task(_spec)


def hub_task_names() -> list[str]:
    return sorted(HUB_TASKS)


# ---------------------------------------------------------------------------------------------------- loading
def _read_local(task_path: Path, split: str):
    import datasets

    for ext, builder in (("jsonl", "json"), ("parquet", "parquet")):
        f = task_path / f"{split}.{ext}"
        if f.exists():
            level = datasets.logging.get_verbosity()
            datasets.logging.set_verbosity(datasets.logging.CRITICAL)    # its "Failed to load ..." line: the error
            try:                                                          # line below says it once
                return datasets.load_dataset(builder, data_files={split: str(f)}, split=split)
            except Exception as e:
                if type(e).__module__.split(".")[0] not in ("datasets", "pyarrow"):
                    raise
                raise TaskLoadError(f"{f}: not readable as {ext} ({read_cause(e)})") from None
            finally:
                datasets.logging.set_verbosity(level)
    raise TaskLoadError(f"{task_path}: no {split}.jsonl or {split}.parquet")


def read_cause(e: BaseException) -> str:
    """What went wrong under a `datasets` error ("An error occurred while generating the dataset"): the first
    exception of its __cause__ chain that says more, as 'Type: message' (pyarrow's names the row)."""
    chain = [e]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    inner = next((c for c in chain[1:] if str(c)), e)
    text = " ".join(str(inner).split())
    if len(text) > 80:               # its first sentence, so that the error line keeps its expected part
        text = text.split(". ")[0][:100]
    return f"{type(inner).__name__}: {text}"


def _read_hub(spec: HubSpec, split: str):
    import datasets

    if not spec.subsets:
        return datasets.load_dataset(spec.hub_id, spec.config, split=split)
    parts = [datasets.load_dataset(spec.hub_id, sub, split=split) for sub in spec.subsets]
    return datasets.concatenate_datasets(parts)


def read_split(spec: HubSpec, split: str, task_path=None) -> list[dict]:
    """The rows of one split, converted ({question, choices?, gold}); rows the task filters out are dropped."""
    ds = _read_local(Path(task_path), split) if task_path else _read_hub(spec, split)
    out = []
    for i, row in enumerate(ds):
        try:
            r = spec.convert(row)
        except TaskLoadError as e:
            raise TaskLoadError(f"{spec.name} {split} row {i}: {e}") from None
        if r is not None:
            out.append(r)
    return out


def load_hub_task(name: str, protocol: str = "chat", task_path=None, constrain: bool = False,
                  scorer_models: str = "auto", max_new: int | None = None, bbq_condition: str | None = None) -> Task:
    """A hub task, every split it uses read once (from DIR/<split>.jsonl|.parquet when task_path is given)."""
    if name == "bbq" and bbq_condition:
        name = f"bbq-{bbq_condition}"
    if name not in HUB_TASKS:
        raise TaskLoadError(f"unknown hub task {name!r}; known: {', '.join(hub_task_names())}")
    if protocol not in PROTOCOLS:
        raise TaskLoadError(f"protocol must be chat or paper, got {protocol!r}")
    spec = HUB_TASKS[name]
    if constrain and spec.kind != "mc":
        raise TaskLoadError(f"--constrain applies to multiple-choice tasks, not {name}")
    items, pools = [], {}
    for split in dict.fromkeys(spec.roles.values()):
        rows = read_split(spec, split, task_path)
        pools[split] = list(range(len(items), len(items) + len(rows)))
        items += [Item(id=f"{name}-{split}-{i:05d}", prompt=make_prompt(protocol, name, spec.kind, r["question"],
                                                                         r.get("choices")),
                       gold=r["gold"], kind=spec.kind, choices=r.get("choices")) for i, r in enumerate(rows)]
    scorers = Scorers(refusal=refusal_classifier(scorer_models) if spec.kind == "refusal" else None,
                      sts=sts_model(scorer_models) if spec.kind == "short" else None)
    return Task(name=name, kind=spec.kind, items=items, max_new_tokens=max_new or max_new_tokens(protocol, spec.kind),
                protocol=protocol, hub_id=spec.hub_id, constrain=constrain, scorers=scorers,
                hub_splits=HubSplits(spec.name, dict(spec.roles), pools))
