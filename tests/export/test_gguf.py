"""llama.cpp control vectors: read back with gguf's own reader, numbered the way llama.cpp applies them (checked on
the tiny model), and refused where llama.cpp cannot express the plan."""
import gguf as gguf_py
import numpy as np
import pytest
import torch
from export_plans import assert_same, feature_plan, logits, random_plan

from corrsteer.cli import main as cli
from corrsteer.export.gguf import write
from corrsteer.model.hooks import HookPoint, hooked


def llamacpp_block_vectors(path, n_layer, n_embd):
    """llama.cpp's reading, reimplemented from ggml-org/llama.cpp: common_control_vector_load_one puts direction.N
    at offset n_embd*(N-1) (N = 0 rejected); llama_adapter_cvec::apply gives block il (1 <= il < n_layer) the
    slice at n_embd*(il-1); build_cvec adds it to block il's output at every position."""
    r = gguf_py.GGUFReader(str(path))
    data = np.zeros(0, np.float32)
    for t in r.tensors:
        prefix, _, n = t.name.partition(".")
        assert prefix == "direction" and int(n) > 0 and t.tensor_type == gguf_py.GGMLQuantizationType.F32
        assert len(t.data) == n_embd
        data = np.concatenate([data, np.zeros(max(0, n_embd * int(n) - len(data)), np.float32)])
        data[n_embd * (int(n) - 1): n_embd * int(n)] += t.data
    out = {}
    for il in range(1, n_layer):
        off = n_embd * (il - 1)
        if off + n_embd <= len(data) and np.any(data[off:off + n_embd]):
            out[il] = torch.from_numpy(data[off:off + n_embd].copy())
    return out


def _field(r, key):
    f = r.get_field(key)
    return f.contents()


def test_control_vector_round_trips_through_gguf_reader(tiny_lm, tmp_path):
    plan = feature_plan(tiny_lm)
    path, = write(plan, tmp_path / "p.gguf")
    r = gguf_py.GGUFReader(str(path))
    assert _field(r, "general.architecture") == "controlvector"
    assert _field(r, "controlvector.model_hint") == tiny_lm.name
    assert _field(r, "controlvector.layer_count") == 2
    got = {t.name: np.array(t.data) for t in r.tensors}
    assert sorted(got) == ["direction.1", "direction.3"]       # blocks.L.hook_resid_post -> direction.L
    for L in (1, 3):
        np.testing.assert_array_equal(got[f"direction.{L}"], np.float32(plan.vectors[f"blocks.{L}.hook_resid_post"]))


@pytest.mark.parametrize("hooks", [["blocks.1.hook_resid_post", "blocks.3.hook_resid_pre"],
                                   ["blocks.2.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]])
def test_llamacpp_numbering_steers_what_the_plan_steers(tiny_lm, tmp_path, hooks):
    plan = random_plan(tiny_lm, hooks)
    path, = write(plan, tmp_path / "p.gguf")
    blocks = llamacpp_block_vectors(path, tiny_lm.n_layers, tiny_lm.d_model)
    ids = torch.randint(0, 500, (2, 7))

    def add(v):
        def fn(h):
            return h + v.to(h.dtype)
        return fn
    llamacpp = logits(tiny_lm, ids, hooks_fn=lambda: hooked(tiny_lm.layers,
                                                           {HookPoint(il, "post"): add(v) for il, v in blocks.items()}))
    assert_same(logits(tiny_lm, ids, plan), llamacpp, logits(tiny_lm, ids))


def _fails(argv, capsys, *words):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("corrsteer: error: ") and all(w in err for w in words), err
    return err


def test_generated_only_plan_is_refused_unless_allowed(tiny_lm, tmp_path, capsys):
    plan = feature_plan(tiny_lm, all_positions=False).save(tmp_path / "plan.json")
    out = tmp_path / "p.gguf"
    _fails(["export", str(plan), "--format", "gguf-control-vector", "--out", str(out)], capsys,
           "--all-positions", "--allow-prompt-positions")
    assert not out.exists()
    assert cli.main(["export", str(plan), "--format", "gguf-control-vector", "--out", str(out),
                     "--allow-prompt-positions"]) == 0
    assert out.exists()


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.0.hook_resid_pre"])
def test_points_llamacpp_cannot_steer_are_refused(tiny_lm, tmp_path, capsys, hook):
    plan = random_plan(tiny_lm, [hook, "blocks.2.hook_resid_post"]).save(tmp_path / "plan.json")
    _fails(["export", str(plan), "--format", "gguf-control-vector", "--out", str(tmp_path / "p.gguf")], capsys,
           "cannot steer")
