"""bench/eos_schedule.py: the fixed EOS schedule gives the lengths it promises, the same in our decode loop and in
HF generate (different batching, padding and row compaction), and nothing outside the block."""
import torch

from bench.eos_schedule import eos_schedule, expected_lengths
from corrsteer.model.generate import generate_batch

PROMPTS = ["Hi", "What is two plus two?", "Name a colour.", "Tell me about the sea in one long sentence, please.",
           "Ok", "Why is the sky blue?", "List three fruits", "x"]


def prompt_lengths(lm, prompts):
    enc = lm.tokenizer([lm.format(p) for p in prompts], add_special_tokens=not lm.has_chat_template)
    return torch.tensor([len(ids) for ids in enc["input_ids"]])


def hf_lengths(lm, prompts, max_new, eos):
    tok = lm.tokenizer
    tok.padding_side = "left"
    enc = tok([lm.format(p) for p in prompts], return_tensors="pt", padding=True,
              add_special_tokens=not lm.has_chat_template)
    out = lm.model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    hit = (new == eos).int()
    return torch.where(hit.any(1), hit.argmax(1) + 1, torch.full_like(hit[:, 0], max_new))


def test_lengths_follow_the_schedule_in_both_decoders(tiny_lm):
    every, max_new = 5, 12
    want = expected_lengths(prompt_lengths(tiny_lm, PROMPTS), every, max_new)
    assert len(set(want.tolist())) >= 3                       # the prompts spread over the schedule
    with eos_schedule(tiny_lm, every) as eos:
        ours = generate_batch(tiny_lm, PROMPTS, max_new).lengths
        ours_batched = torch.cat([generate_batch(tiny_lm, PROMPTS[i:i + 3], max_new).lengths for i in (0, 3, 6)])
        hf = hf_lengths(tiny_lm, PROMPTS, max_new, eos)
    assert ours.tolist() == want.tolist()
    assert ours_batched.tolist() == want.tolist()
    assert hf.tolist() == want.tolist()


def test_no_schedule_outside_the_block(tiny_lm):
    before = generate_batch(tiny_lm, PROMPTS, 6).lengths
    with eos_schedule(tiny_lm, 2):
        pass
    assert generate_batch(tiny_lm, PROMPTS, 6).lengths.tolist() == before.tolist()
    with eos_schedule(tiny_lm, 0) as eos:                     # every <= 0: off
        assert eos is None
        assert generate_batch(tiny_lm, PROMPTS, 6).lengths.tolist() == before.tolist()
