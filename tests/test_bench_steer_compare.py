"""bench/steer_compare.py, the comparison and verdict of bench/llamacpp_check.py and bench/lmeval_check.py: the same
plan's logit changes match, the same vectors one layer off do not (on a tiny llama), changes off by a factor fail,
and the streamed comparison equals the one over whole arrays."""
import math

import pytest
import torch

from bench import steer_compare as C


@pytest.fixture(scope="module")
def deep_lm(test_tokenizer):
    """A tiny random llama whose layers transform the residual (initializer_range 0.1: at the default 0.02 its
    blocks are near the identity, and a vector one layer off changes the logits by under 4%)."""
    import transformers as tf

    from corrsteer.model.lm import LM
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(test_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1)
    return LM(model=tf.LlamaForCausalLM(cfg).eval(), tokenizer=test_tokenizer, name="tiny-llama-deep")


def _changes(lm, plan, ids_list):
    base = torch.cat(C.our_logits(lm, None, ids_list))
    steered = torch.cat(C.our_logits(lm, plan, ids_list))
    return steered - base, steered


def _ids(lm):
    return [lm.tokenizer(lm.format(p), return_tensors="pt").input_ids for p in ("Hello there.", "Is it raining?")]


def test_same_plan_passes_and_one_layer_off_fails(deep_lm):
    plan = C.random_plan(deep_lm, [2, 3], norm=4.0, seed=0)
    control = C.shifted(plan, C.control_shift(plan))
    assert C.plan_layers(control) == [1, 2]
    ids = _ids(deep_lm)
    delta, steered = _changes(deep_lm, plan, ids)
    delta_ctl, steered_ctl = _changes(deep_lm, control, ids)
    same = C.compare(delta, delta.clone(), steered, steered.clone())
    off = C.compare(delta, delta_ctl, steered, steered_ctl)
    assert same["pearson of logit changes"] > 0.999999 and same["max abs difference of logit changes"] == 0
    assert same["top token agrees"] == 1.0 and C.matches(same)
    assert not C.matches(off)
    assert C.verdict(same, off)["pass"]
    assert not C.verdict(off, off)["pass"]          # the plan does not match
    assert not C.verdict(same, same)["pass"]        # the control matches: the check proves nothing


def test_scaled_changes_fail_on_the_max_error_though_they_correlate():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 50, generator=g, dtype=torch.float64)
    s = C.compare(a, 2 * a, a, 2 * a)
    assert s["pearson of logit changes"] > 0.999999 and not C.matches(s)
    noisy = C.compare(a, a + 1e-4 * torch.randn(20, 50, generator=g, dtype=torch.float64), a, a)
    assert C.matches(noisy)


def test_streamed_comparison_equals_whole_arrays():
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(30, 40, generator=g, dtype=torch.float64) for _ in range(2))
    b = 0.6 * a + 0.4 * b
    whole = C.compare(a, b, a, b)
    c = C.Comparison()
    for i in range(0, 30, 7):
        c.add(a[i:i + 7], b[i:i + 7], a[i:i + 7], b[i:i + 7])
    part = c.result()
    for k, v in whole.items():
        assert math.isclose(part[k], v, rel_tol=1e-9), k
    ref = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
    assert math.isclose(whole["pearson of logit changes"], ref, rel_tol=1e-9)
