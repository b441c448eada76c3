"""Seeded, disjoint select / val / test splits of a task's items; a pure function of the task and the seed.

    Splits(select, val, test, note)           unpacks as (select, val, test); note: how they were drawn
    seeded_split(name, items, sizes, seed)    built-in and file tasks: one seeded shuffle, cut in three; by group
                                              where items carry one (grouped_split)
    HubSplits(...).split(items, caps, seed)   hub tasks: the hub's splits serve as roles, missing roles are carved
    split_record(...) / split_overlap(...)    what a plan records of its run's split; eval's check against it

Groups: items that share a template-filled core (built-in refusal: the request; capitals: the country; a task
file's "group" field) carry the same `group`; no group crosses select / val / test (grouped_split), so a test item is
never a paraphrase of a select or val item.

Hub roles: a task's hub splits serve as select / val / test where they exist (HubSplits.roles). Where a role has no
split, the pool is split as the paper's code does (seeded; disjoint): with a test split but no val, select and val
are carved 90 % / 10 % from the select pool; with one split only, 70 % goes to test, then 10 % of the rest to val and
the remainder to select. Splits.note records which, for the report.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

ROLES = ("select", "val", "test")


class Splits(tuple):
    """(select, val, test) lists of items, with `note`: how they were drawn ('' for ungrouped built-in and file
    tasks)."""
    note: str

    def __new__(cls, select: list, val: list, test: list, note: str = ""):
        self = super().__new__(cls, (select, val, test))
        self.note = note
        return self

    @property
    def select(self) -> list:
        return self[0]

    @property
    def val(self) -> list:
        return self[1]

    @property
    def test(self) -> list:
        return self[2]


def group_of(item) -> str:
    """The item's group (items sharing a template-filled core); an item without one is its own group."""
    return getattr(item, "group", "") or f"id:{item.id}"


def seeded_split(name: str, items: list, sizes: tuple[int, int, int], seed: int) -> Splits:
    """Disjoint, deterministic (seeded shuffle) splits of exactly `sizes` items, whole groups per split where the
    items carry groups (grouped_split); ValueError when they do not fit."""
    n_select, n_val, n_test = sizes
    if any(n < 0 for n in sizes):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    if sum(sizes) > len(items):
        raise ValueError(f"task {name!r} has {len(items)} items, fewer than the {sum(sizes)} asked "
                         f"({n_select} select + {n_val} val + {n_test} test)")
    if any(getattr(it, "group", "") for it in items):
        return grouped_split(name, items, sizes, seed)
    order = list(range(len(items)))
    random.Random(f"split:{seed}").shuffle(order)
    picked = [items[i] for i in order]
    return Splits(picked[:n_select], picked[n_select:n_select + n_val], picked[n_select + n_val:sum(sizes)])


def grouped_split(name: str, items: list, sizes: tuple[int, int, int], seed: int) -> Splits:
    """Splits in which no group crosses roles: the groups in a seeded, class-stratified order (_stratified) fill
    select, then val, then test; the group that overflows a role gives it the items it needs and its other items
    are left out (used nowhere). Each role is then shuffled (seeded). ValueError when the groups run out."""
    rng = random.Random(f"split:{seed}")
    groups: dict[str, list] = {}
    for it in items:
        groups.setdefault(group_of(it), []).append(it)
    order = _stratified(list(groups.values()), rng)
    roles, k = [], 0
    for need in sizes:
        picked = []
        while len(picked) < need and k < len(order):
            picked += order[k][:need - len(picked)]
            k += 1
        if len(picked) < need:
            raise ValueError(f"task {name!r} has {len(items)} items in {len(groups)} groups, too few for "
                             f"{sizes[0]} select + {sizes[1]} val + {sizes[2]} test with no group in two splits")
        rng.shuffle(picked)
        roles.append(picked)
    return Splits(*roles, note=f"grouped: no group of items (of {len(groups)}) in two splits")


def _stratified(groups: list[list], rng: random.Random) -> list[list]:
    """The groups in a seeded order that interleaves the kinds of group (their set of gold answers: refusal's
    harmful and benign requests) in proportion, so that each split keeps the task's class mix."""
    rng.shuffle(groups)
    kinds: dict[tuple, list] = {}
    for g in groups:
        kinds.setdefault(tuple(sorted({str(it.gold) for it in g})), []).append(g)
    keyed = [((j + 0.5) / len(gs), rng.random(), g) for gs in kinds.values() for j, g in enumerate(gs)]
    return [g for _, _, g in sorted(keyed, key=lambda t: t[:2])]


def split_record(task_name: str, splits: Splits, sizes: tuple[int, int, int], seed: int) -> dict:
    """What a plan records of its run's split: the task, the sizes asked, the seed and a digest of the select / val
    ids (corrsteer eval checks its test split against them)."""
    return dict(task=task_name, n_select=sizes[0], n_val=sizes[1], n_test=sizes[2], seed=seed,
                select_val_sha256=ids_digest(splits.select + splits.val))


def ids_digest(items: list) -> str:
    return hashlib.sha256("\n".join(str(it.id) for it in items).encode()).hexdigest()


def split_overlap(record: dict, run_splits: Splits, test: list) -> str:
    """'' when `test` shares no item and no group with the recorded run's select / val items (run_splits: the task
    split again with the record's sizes and seed); else what is wrong, in words."""
    seen = run_splits.select + run_splits.val
    if ids_digest(seen) != record.get("select_val_sha256"):
        return (f"the plan's select/val items cannot be drawn again from task {record.get('task')!r} "
                f"(its items changed since the run)")
    ids, groups = {it.id for it in seen}, {group_of(it) for it in seen}
    shared = [it.id for it in test if it.id in ids or group_of(it) in groups]
    if shared:
        return (f"{len(shared)} of the {len(test)} test items (first {shared[0]}) are, or share a group with, "
                f"the plan's select/val items")
    return ""


def _ceil(frac: float, n: int) -> int:
    return min(n, math.ceil(frac * n))


@dataclass(frozen=True)
class HubSplits:
    """Where a hub task's roles come from: `pools` holds, per hub split, the indices of its rows in the task's items;
    `roles` names the hub split serving each role ({"select"|"val"|"test": split}); missing roles are carved."""
    name: str                              # the hub task (seeds the carving)
    roles: dict[str, str]
    pools: dict[str, list[int]]

    def assign(self, seed: int) -> tuple[dict[str, list[int]], str]:
        """({role: item indices} for select / val / test, the note saying how), carving missing roles as the paper's
        code does."""
        rng = random.Random(f"{self.name}:split:{seed}")
        roles = {r: list(self.pools[s]) for r, s in self.roles.items()}
        if "test" in roles and "select" in roles and "val" in roles:
            return roles, "hub splits " + ", ".join(f"{r}={self.roles[r]}" for r in ROLES)
        if "select" in roles:          # test split, no val: carve val (10 %) from the select pool
            pool = roles.pop("select")
            rng.shuffle(pool)
            k = _ceil(0.1, len(pool))
            roles["val"], roles["select"] = pool[:k], pool[k:]
            return roles, (f"test={self.roles['test']}; select/val carved 90/10 from {self.roles['select']} "
                           f"(seeded shuffle, seed {seed})")
        pool = roles.pop("test")        # one split: 70 % test, then 10 % of the rest val
        rng.shuffle(pool)
        k = _ceil(0.7, len(pool))
        rest = pool[k:]
        kv = _ceil(0.1, len(rest))
        roles.update(test=pool[:k], val=rest[:kv], select=rest[kv:])
        return roles, (f"one split ({self.roles['test']}): test 70 %, then val 10 % / select 90 % of the rest "
                       f"(seeded shuffle, seed {seed}; as the paper's code)")

    def split(self, items: list, caps: tuple[int, int, int], seed: int) -> Splits:
        """caps[i] items of each role (fewer where the role has fewer), after a seeded shuffle of the role (a hub
        split may be ordered, MMLU's test split by subject)."""
        roles, note = self.assign(seed)
        rng = random.Random(f"{self.name}:cap:{seed}")
        for r in ROLES:
            rng.shuffle(roles[r])
        return Splits(*([items[i] for i in roles[r][:cap]] for r, cap in zip(ROLES, caps)),
                      note=f"{note}; each role shuffled (seed {seed}) before capping")
