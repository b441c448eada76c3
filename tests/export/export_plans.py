"""Plans for the export tests: fresh random vectors at chosen hooks, and a plan built from SAE features."""
import pytest
import torch
from fakes import tiny_bank

from corrsteer.method.rank import Candidate
from corrsteer.model.hooks import HookPoint
from corrsteer.model.steer import PlanEntry, SteeringPlan


def random_plan(lm, hooks, all_positions=True, seed=None, name="rand", sae_source="random") -> SteeringPlan:
    """A plan adding a fresh random vector (norm ~3) at each hook name."""
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())) if seed is None else seed)
    entries, vecs = [], {}
    for h in hooks:
        hp = HookPoint.parse(h)
        entries.append(PlanEntry(hp.layer, h, [], []))
        vecs[h] = (3.0 * torch.randn(lm.d_model, generator=g, dtype=torch.float64) / lm.d_model ** 0.5).tolist()
    return SteeringPlan(name, lm.name, sae_source, entries, vecs, all_positions=all_positions)


def feature_plan(lm, all_positions=True, sae_source="random") -> SteeringPlan:
    """Features 5 (x2.5) and 9 (x-1) at layer 3, feature 2 (x4) at layer 1 of a random bank."""
    bank = tiny_bank(lm)
    picks = [Candidate(layer=3, feature=5, r=0.4, score=0.4, freq=0.5, coef=2.5),
             Candidate(layer=3, feature=9, r=0.1, score=0.1, freq=0.5, coef=-1.0),
             Candidate(layer=1, feature=2, r=0.2, score=0.2, freq=0.5, coef=4.0)]
    return SteeringPlan.from_features("feat", lm.name, sae_source, bank, picks, all_positions=all_positions)


def logits(lm, ids, plan=None, hooks_fn=None):
    """The model's float64-compared logits for ids, steered by `plan` or inside the context `hooks_fn()`."""
    with torch.no_grad():
        if plan is not None:
            with plan.apply(lm):
                return lm.model(ids).logits.double()
        if hooks_fn is not None:
            with hooks_fn():
                return lm.model(ids).logits.double()
        return lm.model(ids).logits.double()


def assert_same(a, b, plain):
    """a == b to float32 accuracy, and both differ from the unsteered logits (the steering did something)."""
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (a - plain).abs().max() > 1e-2


pytest  # the fixtures come from tests/conftest.py
