"""Seeded, disjoint select / val / test splits of a task's items; a pure function of the task and the seed.

    Splits(select, val, test, note)           unpacks as (select, val, test); note: how they were drawn
    seeded_split(name, items, sizes, seed)    built-in and file tasks: one seeded shuffle, cut in three
    HubSplits(...).split(items, caps, seed)   hub tasks: the hub's splits serve as roles, missing roles are carved

Hub roles: a task's hub splits serve as select / val / test where they exist (HubSplits.roles). Where a role has no
split, the pool is split as the paper's code does (seeded; disjoint): with a test split but no val, select and val
are carved 90 % / 10 % from the select pool; with one split only, 70 % goes to test, then 10 % of the rest to val and
the remainder to select. Splits.note records which, for the report.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

ROLES = ("select", "val", "test")


class Splits(tuple):
    """(select, val, test) lists of items, with `note`: how they were drawn ('' for built-in and file tasks)."""
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


def seeded_split(name: str, items: list, sizes: tuple[int, int, int], seed: int) -> Splits:
    """Disjoint, deterministic (seeded shuffle) splits of exactly `sizes` items; ValueError when they do not fit."""
    n_select, n_val, n_test = sizes
    if any(n < 0 for n in sizes):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    if sum(sizes) > len(items):
        raise ValueError(f"task {name!r} has {len(items)} items, fewer than the {sum(sizes)} asked "
                         f"({n_select} select + {n_val} val + {n_test} test)")
    order = list(range(len(items)))
    random.Random(f"split:{seed}").shuffle(order)
    picked = [items[i] for i in order]
    return Splits(picked[:n_select], picked[n_select:n_select + n_val], picked[n_select + n_val:sum(sizes)])


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
        """The first caps[i] items of each role (fewer where the role has fewer)."""
        roles, note = self.assign(seed)
        return Splits(*([items[i] for i in roles[r][:cap]] for r, cap in zip(ROLES, caps)), note=note)
