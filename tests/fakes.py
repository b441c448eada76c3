"""Stand-ins for the pipeline tests: a deterministic fake task, random SAE banks for the tiny model, paired rows."""
import copy
import random
from contextlib import contextmanager

import torch
from cases import make_sae

from corrsteer.model.generate import eos_ids
from corrsteer.model.hooks import HookPoint
from corrsteer.model.lm import LM
from corrsteer.sae.bank import BankEntry, SAEBank
from corrsteer.tasks.splits import Splits
from corrsteer.tasks.task import Item, Task


class FakeTask(Task):
    """Correct when the answer has an even number of characters: arbitrary, but deterministic."""

    def __init__(self, n=12):
        words = ["apple", "river", "stone", "cloud", "green", "fast", "blue", "quiet", "loud", "night", "tree", "sun"]
        super().__init__(name="fake", kind="label", max_new_tokens=6,
                         items=[Item(f"fake-{i}", f"Say something about the {words[i % 12]} number {i}.", "even",
                                     "label") for i in range(n)])

    def score(self, item, output):
        pred = "even" if len(output) % 2 == 0 else "odd"
        return pred, float(pred == item.gold)

    @property
    def scorer(self) -> str:
        return "even: the answer has an even number of characters"

    def split(self, n_select, n_val, n_test, seed=0):
        a, b = n_select, n_select + n_val
        return Splits(self.items[:a], self.items[a:b], self.items[b:b + n_test])


def tiny_bank(lm, layers=(1, 3), d_sae=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    entries = {}
    for L in layers:
        sae = make_sae(g, lm.d_model, d_sae, "relu")
        sae.W_enc.mul_(3.0)                                    # make features fire on the tiny model's residuals
        entries[L] = BankEntry(sae, HookPoint(L, "post"), f"random-{L}")
    return SAEBank(entries, lm.name)


def paired_rows(n=40, seed=0):
    rng = random.Random(seed)
    base, steered = [], []
    for i in range(n):
        bp, sp = rng.choice("ABCD"), rng.choice("ABCD")
        base.append({"id": f"q{i}", "pred": bp, "correct": bp == "A"})
        steered.append({"id": f"q{i}", "pred": sp, "correct": float(sp == "A")})
    return base, steered


def save_tiny_dirs(lm, root):
    """The tiny model as a HF directory (root/model) and two random SAEs as sae-lens directories (root/saes)."""
    from corrsteer.sae.bank import save_sae_dir
    lm.model.save_pretrained(root / "model")
    lm.tokenizer.save_pretrained(root / "model")
    for _, e in tiny_bank(lm, layers=(1, 2)):
        save_sae_dir(root / "saes" / e.hook.hook_name, e.sae, e.hook, "model")
    return root


def class_rows(counts: dict, seed=0, kind_ok=None):
    """Rows of one variant from {gold: {pred: count}}: ids '<gold>-<i>' (paired across variants with the same gold
    counts), preds dealt to a gold's items in a seeded order, correct = pred == gold (or kind_ok(pred, gold))."""
    rng = random.Random(seed)
    rows = []
    for gold, preds in counts.items():
        dealt = [p for p, c in preds.items() for _ in range(c)]
        rng.shuffle(dealt)
        for i, p in enumerate(dealt):
            ok = kind_ok(p, gold) if kind_ok else p == gold
            rows.append({"id": f"{gold}-{i}", "gold": gold, "pred": p, "correct": float(ok), "output": p})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# devices and generation lengths, for the device tests
# ---------------------------------------------------------------------------------------------------------------
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def on(lm, device, dtype=None):
    model = copy.deepcopy(lm.model).to(device=device, dtype=dtype)
    return LM(model=model, tokenizer=lm.tokenizer, name=lm.name)


@contextmanager
def forced_eos(lm, every=4):
    """EOS wins wherever the argmax token id is a multiple of `every`: rows end at different steps, decided by each
    row's own logits (so batch composition cannot change it)."""
    eos = min(eos_ids(lm))

    def hook(mod, args, out):
        out = out.clone()
        win = out.argmax(-1) % every == 0
        out[..., eos] = torch.where(win, out.max(-1).values + 1, out[..., eos])
        return out
    h = lm.model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()
