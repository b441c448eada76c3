"""Steering plans: round trip, and they add exactly their vector at exactly the chosen positions."""
import pytest
import torch
from fakes import tiny_bank

from corrsteer.method.rank import Candidate
from corrsteer.model.hooks import HookPoint, capture
from corrsteer.model.steer import SteeringPlan


@pytest.mark.parametrize("all_positions", [False, True])
def test_plan_adds_exactly_its_vector_at_exactly_the_chosen_positions(tiny_lm, tmp_path, all_positions):
    bank = tiny_bank(tiny_lm)
    plan = SteeringPlan.from_features("t", tiny_lm.name, "random", bank,
                                      [Candidate(layer=3, feature=5, r=0.4, score=0.4, freq=0.5, coef=2.5),
                                       Candidate(layer=3, feature=9, r=0.0, score=0.0, freq=0.5, coef=-1.0)],
                                      all_positions=all_positions)
    path = plan.save(tmp_path / "plan.json")
    back = SteeringPlan.load(path)
    assert back == plan                                        # round trip
    v = 2.5 * bank[3].sae.W_dec[5] - 1.0 * bank[3].sae.W_dec[9]
    torch.testing.assert_close(back.hook_vectors()[HookPoint(3, "post")], v)
    ids = torch.randint(0, 500, (2, 6))
    hp = HookPoint(3, "post")
    with torch.no_grad():
        with capture(tiny_lm.layers, [hp]) as plain:
            tiny_lm.model(ids)
        with back.apply(tiny_lm), capture(tiny_lm.layers, [hp]) as steered:
            tiny_lm.model(ids)
    diff = steered[hp][0] - plain[hp][0]
    expect = torch.zeros_like(diff)
    if all_positions:
        expect[:] = v
    else:
        expect[:, -1] = v                                      # a prefill: only the last prompt token
    torch.testing.assert_close(diff, expect, rtol=1e-5, atol=1e-5)
