"""Our hook points as "the output of decoder layer k", the numbering the other runtimes use."""
import numpy as np
import pytest

from corrsteer.export.sites import EMBEDDINGS, Site, check_positions, layer_outputs
from corrsteer.model.steer import SteeringPlan
from corrsteer.settings import SettingsError


def _plan(vectors, all_positions=False):
    return SteeringPlan("p", "m", "trained", [], vectors=vectors, all_positions=all_positions)


def test_hooks_map_to_layer_outputs():
    assert Site.of("blocks.3.hook_resid_post").k == 3
    assert Site.of("blocks.3.hook_resid_pre").k == 2                   # the input of layer 3 = the output of 2
    assert Site.of("blocks.0.hook_resid_pre").k == EMBEDDINGS
    assert Site(2).hook == "blocks.2.hook_resid_post" and Site(EMBEDDINGS).hook == "blocks.0.hook_resid_pre"


def test_vectors_at_the_same_point_are_summed_in_order():
    out = layer_outputs(_plan({"blocks.4.hook_resid_pre": [1.0, 2.0], "blocks.3.hook_resid_post": [0.5, 0.5],
                               "blocks.1.hook_resid_post": [0.0, 1.0]}))
    assert list(out) == [1, 3]
    np.testing.assert_array_equal(out[3], np.array([1.5, 2.5], dtype=np.float32))
    with pytest.raises(SettingsError, match="has no vectors"):
        layer_outputs(_plan({}))


def test_generated_only_plans_need_consent_for_every_position_runtimes():
    check_positions(_plan({}, all_positions=True), "lm-eval", False)
    check_positions(_plan({}), "lm-eval", True)
    with pytest.raises(SettingsError, match="^--format lm-eval steers every prompt position"):
        check_positions(_plan({}), "lm-eval", False)
