"""Collection on the device: statistics equal a float64 recomputation (ragged EOS), bf16 end to end, banks and models
loaded onto a device in a dtype, and (with CUDA) the whole collect + select pipeline on CUDA equal to the CPU's."""
import pytest
import torch
from fakes import DEVICES, FakeTask, forced_eos, on, tiny_bank

from corrsteer.method.rank import layer_candidates
from corrsteer.model.generate import generate_batch
from corrsteer.pipeline.collect import collect
from corrsteer.sae.bank import load_bank, save_sae_dir
from corrsteer_kernels import CorrStats, encode_pool_reference


def _reference(lm, bank, task, ys):
    """float64 statistics recomputed from one generate_batch over all items (on the CPU)."""
    out = generate_batch(lm, [it.prompt for it in task.items], task.max_new_tokens,
                         capture=[e.hook for _, e in bank])
    sae, raw = {}, {}
    for L, e in bank:
        h, n = out.captured[e.hook].cpu().double(), out.lengths.cpu()
        sae_cpu = e.sae.to("cpu", torch.float64)
        sae[L] = CorrStats(e.sae.d_sae, device="cpu").update(encode_pool_reference(h, n, sae_cpu, "max"), ys)
        means = torch.stack([h[b, :int(n[b])].mean(0) for b in range(h.shape[0])])
        raw[L] = CorrStats(lm.d_model, device="cpu").update(means, ys)
    return sae, raw


@pytest.mark.parametrize("device", DEVICES)
def test_collect_on_device_equals_float64_recomputation(tiny_lm, device, tmp_path):
    lm = on(tiny_lm, device)
    bank = tiny_bank(lm).to(lm.device)
    task = FakeTask(10)
    with forced_eos(lm):
        col = collect(lm, bank, task, task.items, batch_size=4, checkpoint=tmp_path / "ck.safetensors",
                      progress=False)
        ys = torch.tensor([r["correct"] for r in col.rows])
        assert 0 < ys.sum() < len(ys)
        sae, raw = _reference(lm, bank, task, ys)
    for L in bank.layers:
        assert col.sae[L].device == lm.device and col.raw[L].device == lm.device
        torch.testing.assert_close(col.sae[L].sums_at(sae[L].shift).cpu(), sae[L].features, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(col.sae[L].scalars.cpu(), sae[L].scalars)
        torch.testing.assert_close(col.raw[L].sums_at(raw[L].shift).cpu(), raw[L].features, rtol=1e-5, atol=1e-4)
    again = collect(lm, bank, task, task.items, batch_size=4, checkpoint=tmp_path / "ck.safetensors",
                    progress=False)                           # resumes from the (host) checkpoint
    assert again.rows == col.rows and torch.equal(again.sae[1].features, col.sae[1].features)


def test_collect_refuses_a_bank_on_another_device(tiny_lm):
    from types import SimpleNamespace
    lm = SimpleNamespace(device=torch.device("meta"), d_model=tiny_lm.d_model)     # as if the model were elsewhere
    with pytest.raises(ValueError, match="is on cpu but the model is on meta"):
        collect(lm, tiny_bank(tiny_lm), FakeTask(2), FakeTask(2).items, progress=False)


def test_bf16_end_to_end(tiny_lm):
    lm = on(tiny_lm, "cpu", torch.bfloat16)
    bank = tiny_bank(lm).to(dtype=torch.bfloat16)
    e = bank[1]
    assert e.sae.W_enc.dtype == torch.bfloat16 and e.sae.b_enc.dtype == torch.float32
    task = FakeTask(8)
    col = collect(lm, bank, task, task.items, batch_size=4, progress=False)
    ys = torch.tensor([r["correct"] for r in col.rows])
    out = generate_batch(lm, [it.prompt for it in task.items], task.max_new_tokens, capture=[e.hook])
    assert out.captured[e.hook].dtype == torch.bfloat16
    want = CorrStats(e.sae.d_sae).update(
        encode_pool_reference(out.captured[e.hook].double(), out.lengths, e.sae.to(dtype=torch.float64), "max"), ys)
    assert torch.isfinite(col.sae[1].features).all()
    torch.testing.assert_close(col.sae[1].sums_at(want.shift), want.features, rtol=2e-3, atol=2e-3)


def test_load_bank_on_device_in_dtype(tiny_lm, tmp_path):
    for L, e in tiny_bank(tiny_lm, layers=(1, 2)):
        save_sae_dir(tmp_path / e.hook.hook_name, e.sae, e.hook, "tiny")
    bank = load_bank(str(tmp_path), lm=tiny_lm, dtype="bfloat16")
    for _, e in bank:
        assert e.sae.device == tiny_lm.device
        assert e.sae.W_enc.dtype == e.sae.W_dec.dtype == torch.bfloat16 and e.sae.b_enc.dtype == torch.float32
    assert load_bank(str(tmp_path), lm=tiny_lm)[1].sae.W_enc.dtype == torch.float32


def test_load_model_in_a_dtype_given_by_name(tiny_lm, tmp_path):
    from corrsteer.model.lm import as_dtype, load_model
    tiny_lm.model.save_pretrained(tmp_path / "m")
    tiny_lm.tokenizer.save_pretrained(tmp_path / "m")
    lm = load_model(str(tmp_path / "m"), dtype="bfloat16", device="cpu")
    assert next(lm.model.parameters()).dtype == torch.bfloat16 and lm.device == torch.device("cpu")
    assert as_dtype("fp16") == torch.float16 and as_dtype(torch.float32) == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        as_dtype("float8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_collect_and_select_on_cuda_equal_the_cpu(tiny_lm):
    task = FakeTask(12)
    res = {}
    for device in ("cpu", "cuda"):
        lm = on(tiny_lm, device)
        bank = tiny_bank(lm, layers=(0, 2, 3)).to(lm.device)
        with forced_eos(lm):
            col = collect(lm, bank, task, task.items, batch_size=4, progress=False)
        res[device] = col, layer_candidates(col.sae, k=3)
    (c_cpu, k_cpu), (c_gpu, k_gpu) = res["cpu"], res["cuda"]
    assert c_gpu.rows == c_cpu.rows
    for L in c_cpu.sae:
        for kind in ("sae", "raw"):
            want = getattr(c_cpu, kind)[L]
            torch.testing.assert_close(getattr(c_gpu, kind)[L].sums_at(want.shift).cpu(), want.features, rtol=1e-4,
                                       atol=1e-3)
    assert {L: [c.feature for c in k] for L, k in k_gpu.items()} == \
        {L: [c.feature for c in k] for L, k in k_cpu.items()}
