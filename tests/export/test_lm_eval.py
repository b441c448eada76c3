"""lm-evaluation-harness's steered model: the .pt loaded and applied the way lm_eval/models/hf_steered.py does
(reimplemented here from EleutherAI/lm-evaluation-harness; lm_eval itself is not installed) steers the tiny model
exactly as the plan does."""
from contextlib import contextmanager

import pytest
import torch
from export_plans import assert_same, logits, random_plan

from corrsteer.cli import main as cli
from corrsteer.export.lm_eval import write


@contextmanager
def hf_steered(model, steer_path):
    """SteeredModel.__init__ + steer(): torch.load the file; for action "add" a forward hook on the module named
    hookpoint in model.base_model.named_modules() replaces its output (or output[0]) with acts + vector * coef."""
    with open(steer_path, "rb") as f:
        config = torch.load(f, weights_only=False)
    fns = {}
    for hookpoint, info in config.items():
        assert info["action"] == "add" and info.get("bias") is None and info.get("head_index") is None
        vec = info["steering_vector"].to(model.dtype) * float(info.get("steering_coefficient", 1.0))
        fns[hookpoint] = lambda acts, vec=vec: acts + vec

    def make(name):
        def hook(module, inp, output):
            if isinstance(output, tuple):
                return (fns[name](output[0]), *output[1:])
            return fns[name](output)
        return hook
    handles = [m.register_forward_hook(make(n)) for n, m in model.base_model.named_modules() if n in fns]
    assert len(handles) == len(fns), "not all hookpoints could be resolved"
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("hooks", [["blocks.0.hook_resid_post", "blocks.3.hook_resid_pre"],
                                   ["blocks.2.hook_resid_post", "blocks.3.hook_resid_pre", "blocks.1.hook_resid_pre"]])
def test_steer_file_applied_like_hf_steered_matches_the_plan(tiny_lm, tmp_path, hooks):
    plan = random_plan(tiny_lm, hooks)
    path, = write(plan, tmp_path / "steer.pt")
    ids = torch.randint(0, 500, (2, 6))
    got = logits(tiny_lm, ids, hooks_fn=lambda: hf_steered(tiny_lm.model, path))
    assert_same(logits(tiny_lm, ids, plan), got, logits(tiny_lm, ids))


def test_embedding_point_and_wrong_suffix_are_refused(tiny_lm, tmp_path, capsys):
    plan = random_plan(tiny_lm, ["blocks.0.hook_resid_pre"]).save(tmp_path / "a.json")
    ok = random_plan(tiny_lm, ["blocks.1.hook_resid_post"]).save(tmp_path / "b.json")
    for argv, words in [([str(plan), "--out", str(tmp_path / "s.pt")], "cannot steer"),
                        ([str(ok), "--out", str(tmp_path / "s.csv")], "expected FILE.pt")]:
        with pytest.raises(SystemExit) as e:
            cli.main(["export", "--format", "lm-eval", *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert words in err[-1] and err[-1].startswith("corrsteer: error: "), err
