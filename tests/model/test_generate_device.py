"""The device-resident, sync-free decode loop: equal to HF generate with ragged EOS and steering, captures equal a
plain forward, compaction and mask kinds change nothing, and no host sync per decode step."""

import pytest
import torch
from fakes import DEVICES, forced_eos, on

from corrsteer.model import generate as G
from corrsteer.model.generate import eos_ids, generate_batch
from corrsteer.model.hooks import HookPoint, capture, hooked
from corrsteer.model.lm import LM
from corrsteer.model.profiling import count_host_syncs, sync_points
from corrsteer_kernels import steer_add_

PROMPTS = ["Hi", "Tell me a long story about a cat and a dog please.", "What is two plus two?", "x",
           "Name three colors", "Why is the sky blue? Explain in detail."]
POINTS = [HookPoint(1, "post"), HookPoint(3, "pre")]


def _adder(vecs, rows):
    def fn(h):
        steer_add_(h[:, -1:], vecs, rows)        # the last position of a prefill, and every decode step
    return fn


def hf_reference(lm, prompts, n, plans=None):
    """HF generate on every prompt x plan row, steering added (at the last prompt token and every decode step) by a
    hook: (texts, lengths) cut at the first EOS."""
    plans = plans or [{}]
    tok, eos = lm.tokenizer, sorted(eos_ids(lm))
    texts = [lm.format(p) for p in prompts for _ in plans]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
    fns = {}
    for hp in {hp for p in plans for hp in p}:
        vecs = torch.stack([p.get(hp, torch.zeros(lm.d_model)).float() for p in plans]).to(lm.device)
        rows = torch.arange(len(plans), device=lm.device).repeat(len(prompts))
        fns[hp] = _adder(vecs, rows)
    with hooked(lm.layers, fns):
        ref = lm.model.generate(**enc, max_new_tokens=n, do_sample=False, eos_token_id=eos,
                                pad_token_id=tok.pad_token_id)
    out_t, out_n = [], []
    for row in ref[:, enc["input_ids"].shape[1]:].tolist():
        k = next((i for i, x in enumerate(row) if x in eos), None)
        out_t.append(tok.decode(row[:k] if k is not None else row, skip_special_tokens=True))
        out_n.append(k + 1 if k is not None else len(row))
    return out_t, out_n


@pytest.mark.parametrize("device", DEVICES)
def test_matches_hf_generate_with_ragged_eos(tiny_lm, device):
    lm = on(tiny_lm, device)
    with forced_eos(lm):
        out = generate_batch(lm, PROMPTS, 20, capture=POINTS)
        texts, lengths = hf_reference(lm, PROMPTS, 20)
    assert len(set(lengths)) >= 3 and max(lengths) < 20, "rows should finish at different steps"
    assert out.texts == texts
    assert out.lengths.tolist() == lengths
    assert out.lengths.device == lm.device and all(h.device == lm.device for h in out.captured.values())


@pytest.mark.parametrize("device", DEVICES)
def test_steered_rows_match_hf_generate(tiny_lm, device):
    lm = on(tiny_lm, device)
    g = torch.Generator().manual_seed(1)
    plans = [{}, {HookPoint(1, "post"): 4 * torch.randn(lm.d_model, generator=g)},
             {HookPoint(3, "pre"): 4 * torch.randn(lm.d_model, generator=g),
              HookPoint(0, "post"): 2 * torch.randn(lm.d_model, generator=g)}]
    with forced_eos(lm):
        out = generate_batch(lm, PROMPTS[:4], 12, plans=plans)
        texts, lengths = hf_reference(lm, PROMPTS[:4], 12, plans)
    assert out.texts == texts and out.lengths.tolist() == lengths
    assert out.texts[0::3] != out.texts[1::3]


def test_captures_equal_a_plain_forward_and_are_zero_past_the_length(tiny_lm):
    lm = tiny_lm
    with forced_eos(lm):
        out = generate_batch(lm, PROMPTS, 12, capture=POINTS)
        tok = lm.tokenizer
        for r, prompt in enumerate(PROMPTS):
            ids = tok(lm.format(prompt), return_tensors="pt", add_special_tokens=False)["input_ids"]
            ans = tok(out.texts[r], add_special_tokens=False)["input_ids"]
            n = int(out.lengths[r])
            full = torch.cat([ids, torch.tensor([ans[:n - 1]], dtype=torch.long)], 1)
            if len(ans) < n - 1:
                continue                                   # the text does not re-tokenize to the same ids
            with torch.no_grad(), capture(lm.layers, POINTS) as got:
                lm.model(full)
            P = ids.shape[1]
            for hp in POINTS:
                torch.testing.assert_close(out.captured[hp][r, :n], got[hp][0][0, P - 1:P - 1 + n],
                                           rtol=1e-4, atol=1e-4)
                assert not out.captured[hp][r, n:].any()


@pytest.mark.parametrize("device", DEVICES)
def test_compaction_and_check_schedule_change_nothing_but_rounding(tiny_lm, device, monkeypatch):
    lm = on(tiny_lm, device)
    compacted = []
    real = G.Decoder.compact
    monkeypatch.setattr(G.Decoder, "compact", lambda self, *a: compacted.append(self.n) or real(self, *a))
    with forced_eos(lm):
        base = generate_batch(lm, PROMPTS, 20, capture=POINTS)
        assert not compacted
        comp = generate_batch(lm, PROMPTS, 20, capture=POINTS, compact=True)
        assert compacted, "no row was dropped"
        monkeypatch.setattr(G, "CHECK_EVERY", 1000)     # one host check at steps 2 and 4 only: decode to the end
        late = generate_batch(lm, PROMPTS, 20, capture=POINTS)
    for other in (comp, late):
        assert other.texts == base.texts and torch.equal(other.lengths, base.lengths)
    for hp in POINTS:
        assert torch.equal(late.captured[hp], base.captured[hp])
        torch.testing.assert_close(comp.captured[hp], base.captured[hp], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["2d", "4d"])
def test_mask_kinds_agree(tiny_lm, kind, monkeypatch):
    real = G._decode_mask
    seen = []

    def forced(lm, mask, width, padded):
        k, full = real(lm, mask, width, padded)
        seen.append(k)
        if k == "4d" and kind == "2d":
            return "2d", full[:, 0, 0, :].long()
        return k, full
    with forced_eos(tiny_lm):
        want = hf_reference(tiny_lm, PROMPTS, 10)
        monkeypatch.setattr(G, "_decode_mask", forced)
        out = generate_batch(tiny_lm, PROMPTS, 10)
        one = generate_batch(tiny_lm, PROMPTS[1:2], 10)           # no padding: no mask at all
    assert seen == ["4d", "none"]
    assert (out.texts, out.lengths.tolist()) == want
    assert one.texts == [want[0][1]]


def test_sliding_window_model_falls_back_to_2d_masks(default_lm):
    from conftest import tiny_model
    lm = LM(model=tiny_model("gemma3", vocab_size=len(default_lm.tokenizer)), tokenizer=default_lm.tokenizer,
            name="tiny-gemma3")                                # sliding window 16 < prompt + answer
    with forced_eos(lm, every=3):
        out = generate_batch(lm, PROMPTS[:3], 8)
        want = hf_reference(lm, PROMPTS[:3], 8)
    assert (out.texts, out.lengths.tolist()) == want


def _collect_like(lm, n):
    plans = [{}, {HookPoint(2, "post"): torch.ones(lm.d_model)}]
    return lambda: generate_batch(lm, PROMPTS, n, capture=POINTS, plans=plans)


def test_no_host_sync_per_decode_step(tiny_lm):
    """Without EOS every row decodes max_new_tokens steps; the only syncs added per step are the host checks."""
    short = sync_points(_collect_like(tiny_lm, 4))
    long = sync_points(_collect_like(tiny_lm, 36))
    extra = len(long) - len(short)              # 32 more steps; host checks after steps 4, 8, 16, 24, 32 (1 each)
    assert extra <= 5, long
    assert extra / 32 <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_host_syncs_per_decode_step(tiny_lm):
    lm = on(tiny_lm, "cuda")
    _collect_like(lm, 4)()                                     # warm up (kernels compiled, allocator primed)
    short = count_host_syncs(_collect_like(lm, 4))
    long = count_host_syncs(_collect_like(lm, 36))
    assert (long - short) / 32 <= 1, (short, long)


def test_count_host_syncs_is_none_without_cuda():
    if torch.cuda.is_available():
        assert count_host_syncs(lambda: torch.ones(2, device="cuda").sum().item()) >= 1
    else:
        assert count_host_syncs(lambda: None) is None
    assert "_local_scalar_dense" in sync_points(lambda: torch.ones(2).sum().item())
