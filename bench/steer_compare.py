"""Shared by the export checks (bench/lmeval_check.py, bench/llamacpp_check.py): a random plan, the same plan one
layer off (the control), chat-formatted prompt token ids, our per-token logits, and the comparison of two runtimes'
logit changes (steered minus unsteered) with its verdict.

Verdict rule (`matches`): the other runtime's logit changes correlate with ours at Pearson >= MIN_PEARSON and their
largest difference is at most MAX_ERR_SHARE of the largest change of ours. A check passes when the exported plan
matches and the control (the same vectors one layer off) does not.
"""
from __future__ import annotations

import torch

from corrsteer.model.hooks import HookPoint
from corrsteer.model.steer import PlanEntry, SteeringPlan
from corrsteer.tasks.task import get_task

MIN_PEARSON = 0.99
MAX_ERR_SHARE = 0.1


def random_plan(lm, layers, norm, seed) -> SteeringPlan:
    """A vector of norm `norm` (random direction) at the output of each of `layers`, every position."""
    g = torch.Generator().manual_seed(seed)
    entries, vecs = [], {}
    for L in layers:
        h = HookPoint(L, "post").hook_name
        v = torch.randn(lm.d_model, generator=g, dtype=torch.float64)
        entries.append(PlanEntry(L, h, [], []))
        vecs[h] = (norm * v / v.norm()).tolist()
    return SteeringPlan("random", lm.name, "random", entries, vecs, all_positions=True)


def shifted(plan: SteeringPlan, by: int) -> SteeringPlan:
    """The plan's vectors at the output of layer L + by (the control)."""
    entries, vecs = [], {}
    for h, v in plan.vectors.items():
        hp = HookPoint.parse(h)
        new = HookPoint(hp.layer + by, hp.point).hook_name
        entries.append(PlanEntry(hp.layer + by, new, [], []))
        vecs[new] = v
    return SteeringPlan(plan.name + f"-shift{by}", plan.model, plan.sae_source, entries, vecs, all_positions=True)


def control_shift(plan: SteeringPlan) -> int:
    """-1 (one layer down) unless the plan steers layer 0 or 1 (llama.cpp has no direction.0), then +1."""
    return -1 if min(HookPoint.parse(h).layer for h in plan.vectors) > 1 else 1


def plan_layers(plan: SteeringPlan) -> list[int]:
    return sorted(HookPoint.parse(h).layer for h in plan.vectors)


def task_prompt_ids(lm, task: str, n: int, seed: int) -> list[torch.Tensor]:
    """(1, T) token ids of the first n items of a built-in task, chat-formatted as our runtime feeds them."""
    items = get_task(task, seed=seed).items[:n]
    return [lm.tokenizer(lm.format(it.prompt), return_tensors="pt").input_ids for it in items]


def our_logits(lm, plan, ids_list) -> list[torch.Tensor]:
    """Our model's (T, vocab) logits per prompt, float64, with `plan` applied at every position (None: unsteered)."""
    with torch.no_grad():
        if plan is None:
            return [lm.model(ids).logits[0].double() for ids in ids_list]
        with plan.apply(lm):
            return [lm.model(ids).logits[0].double() for ids in ids_list]


class Comparison:
    """Pearson correlation, max abs difference and top-token agreement of two runtimes' logit changes, fed one
    prompt (or any chunk of positions) at a time so that no full-vocabulary array of every token is held."""

    def __init__(self):
        self.s = torch.zeros(6, dtype=torch.float64)     # n, sum a, sum b, sum a^2, sum b^2, sum ab
        self.max_err = self.max_change = self.sum_abs = 0.0
        self.agree = self.positions = 0

    def add(self, ours_delta, theirs_delta, ours_steered, theirs_steered) -> None:
        a, b = ours_delta.double().flatten(), theirs_delta.double().flatten()
        self.s += torch.stack([torch.tensor(float(a.numel()), dtype=torch.float64), a.sum(), b.sum(),
                               (a * a).sum(), (b * b).sum(), (a * b).sum()])
        self.max_err = max(self.max_err, (a - b).abs().max().item())
        self.max_change = max(self.max_change, a.abs().max().item())
        self.sum_abs += a.abs().sum().item()
        self.agree += int((ours_steered.argmax(-1) == theirs_steered.argmax(-1)).sum())
        self.positions += ours_steered.shape[0]

    def result(self) -> dict:
        n, sa, sb, saa, sbb, sab = self.s.tolist()
        cov, va, vb = sab - sa * sb / n, saa - sa * sa / n, sbb - sb * sb / n
        corr = cov / (va * vb) ** 0.5 if va > 0 and vb > 0 else float("nan")
        return {"pearson of logit changes": corr, "max abs difference of logit changes": self.max_err,
                "mean abs logit change (ours)": self.sum_abs / n, "max abs logit change (ours)": self.max_change,
                "top token agrees": self.agree / self.positions}


def compare(ours_delta: torch.Tensor, theirs_delta: torch.Tensor, ours_steered, theirs_steered) -> dict:
    """Comparison of whole (positions, vocab) arrays at once."""
    c = Comparison()
    c.add(ours_delta, theirs_delta, ours_steered, theirs_steered)
    return c.result()


def matches(stats: dict, min_pearson: float = MIN_PEARSON, max_err_share: float = MAX_ERR_SHARE) -> bool:
    """The verdict on one comparison: the other runtime's logit changes are ours (see the module's docstring)."""
    corr = stats["pearson of logit changes"]
    return bool(corr >= min_pearson and
                stats["max abs difference of logit changes"] <= max_err_share * stats["max abs logit change (ours)"])


def verdict(steered: dict, control: dict) -> dict:
    """pass: the exported plan matches ours and the control (one layer off) does not."""
    ok, ctl = matches(steered), matches(control)
    return {"steered matches": ok, "control matches": ctl, "pass": ok and not ctl,
            "rule": f"match = pearson >= {MIN_PEARSON} and max abs difference <= {MAX_ERR_SHARE} x max abs change "
                    "of ours; pass = steered matches and control does not"}
