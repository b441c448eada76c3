"""Training activations: the same rows in memory and through float16 files, positions past the skip only, at most
max_tokens rows, and the forward stopped after the deepest hooked layer."""
import torch

from corrsteer.model.hooks import HookPoint, capture
from corrsteer.sae.activations import chat_prefix, collect_activations, collect_to_disk, load_layer, take_tokens


def test_take_tokens_counts_positions_past_the_skip():
    seqs = [[1] * 5, [2] * 2, [3] * 7, [4] * 4]
    assert take_tokens(seqs, 4, skip=2) == [[1] * 5, [3] * 7]        # [2]*2 has nothing past the skip
    assert take_tokens(seqs, 100, skip=0) == seqs
    assert take_tokens(seqs, 0) == []


def test_chat_prefix_is_shared_and_at_least_one(tiny_lm):
    n = chat_prefix(tiny_lm)
    assert n >= 1
    tok = tiny_lm.tokenizer
    a = tok(tok.apply_chat_template([{"role": "user", "content": "abc"}], tokenize=False),
            add_special_tokens=False)["input_ids"]
    b = tok(tok.apply_chat_template([{"role": "user", "content": "xyz 12"}], tokenize=False),
            add_special_tokens=False)["input_ids"]
    assert a[:n] == b[:n]


@torch.no_grad()
def test_rows_equal_a_plain_forward_and_survive_the_file(tiny_lm, tmp_path):
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(5, 400, (n,), generator=g).tolist() for n in (9, 4, 13, 1, 6)]
    points = [HookPoint(0, "post"), HookPoint(2, "pre")]
    mem = collect_activations(tiny_lm, seqs, points, max_tokens=1000, skip=2, progress=False)
    want = {hp: [] for hp in points}
    for s in sorted((s for s in seqs if len(s) > 2), key=len, reverse=True):   # longest first, as batched
        with capture(tiny_lm.layers, points) as store:
            tiny_lm.model(input_ids=torch.tensor([s]), use_cache=False)
        for hp in points:
            want[hp].append(store[hp][0][0, 2:].float())
    for hp in points:
        torch.testing.assert_close(mem[hp], torch.cat(want[hp]), rtol=1e-4, atol=1e-5)
    first = collect_activations(tiny_lm, seqs, points, max_tokens=20, skip=2, progress=False)
    n = collect_to_disk(tiny_lm, seqs, points, max_tokens=20, folder=tmp_path, skip=2, progress=False)
    assert n == 20
    for hp in points:
        disk = load_layer(tmp_path, hp, tiny_lm.d_model)
        assert disk.shape == first[hp].shape == (20, tiny_lm.d_model)
        torch.testing.assert_close(disk, first[hp], rtol=2e-3, atol=2e-3)     # float16 storage
