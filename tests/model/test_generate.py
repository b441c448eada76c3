"""Batched greedy generation on the tiny random model: equal to HF generate, captures, batched plans."""
import torch

from corrsteer.model.generate import generate_batch
from corrsteer.model.hooks import HookPoint, capture


def test_generate_matches_hf_generate_with_left_padding(tiny_lm):
    prompts = ["Hi", "Tell me a long story about a cat and a dog please.", "What is two plus two?"]
    out = generate_batch(tiny_lm, prompts, 7)
    tok = tiny_lm.tokenizer
    enc = tok([tiny_lm.format(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
    ref = tiny_lm.model.generate(**enc, max_new_tokens=7, do_sample=False)
    texts = tok.batch_decode(ref[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.texts == texts
    assert (out.lengths >= 1).all() and (out.lengths <= 7).all()


def test_capture_holds_the_generation_positions(tiny_lm):
    hp = HookPoint(2, "post")
    out = generate_batch(tiny_lm, ["One", "Two three four"], 5, capture=[hp])
    h = out.captured[hp]
    assert h.shape[0] == 2 and h.shape[2] == tiny_lm.d_model
    # the first generation position is the last prompt token: recompute it with a plain forward
    tok = tiny_lm.tokenizer
    enc = tok([tiny_lm.format("One"), tiny_lm.format("Two three four")], return_tensors="pt", padding=True,
              add_special_tokens=False)
    pos = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
    with torch.no_grad(), capture(tiny_lm.layers, [hp]) as got:
        tiny_lm.model(**enc, position_ids=pos)
    torch.testing.assert_close(h[:, 0], got[hp][0][:, -1], rtol=1e-4, atol=1e-4)


def test_batched_candidates_equal_one_at_a_time(tiny_lm):
    g = torch.Generator().manual_seed(1)
    plans = [{}, {HookPoint(1, "post"): 4 * torch.randn(tiny_lm.d_model, generator=g)},
             {HookPoint(3, "pre"): 4 * torch.randn(tiny_lm.d_model, generator=g)},
             {HookPoint(0, "post"): torch.randn(tiny_lm.d_model, generator=g),
              HookPoint(2, "post"): torch.randn(tiny_lm.d_model, generator=g)}]
    prompts = ["Alpha beta", "Gamma delta epsilon zeta", "Eta"]
    together = generate_batch(tiny_lm, prompts, 6, plans=plans)
    for c, plan in enumerate(plans):
        alone = generate_batch(tiny_lm, prompts, 6, plans=[plan])
        assert together.texts[c::len(plans)] == alone.texts, c
    assert together.texts[0::4] != together.texts[1::4]        # steering did change something
