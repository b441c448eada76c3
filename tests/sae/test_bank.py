"""SAE banks: sae-lens directories (ours and sae-lens's own), hook metadata, dimension and layer checks."""
import pytest
import torch
from cases import make_sae

from corrsteer.model.hooks import HookPoint
from corrsteer.sae.bank import load_bank, load_sae_dir, save_sae_dir
from corrsteer_kernels import encode_pool


class FakeLM:
    def __init__(self, d_model=24, n_layers=6, name="fake"):
        self.d_model, self.n_layers, self.name = d_model, n_layers, name


def _same_encoding(a, b):
    x = torch.randn(3, 5, a.d_in, generator=torch.Generator().manual_seed(9))
    L = torch.tensor([5, 1, 3])
    torch.testing.assert_close(encode_pool(x, L, a, backend="reference"), encode_pool(x, L, b, backend="reference"))


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("point", ["pre", "post"])
def test_save_load_round_trip(tmp_path, activation, point):
    sae = make_sae(torch.Generator().manual_seed(1), 24, 40, activation, k=5)
    hp = HookPoint(3, point)
    save_sae_dir(tmp_path / hp.hook_name, sae, hp, "fake")
    e = load_sae_dir(tmp_path / hp.hook_name)
    assert e.hook == hp and e.sae.activation == activation and e.sae.k == sae.k
    for name in ("W_enc", "b_enc", "b_dec", "W_dec", "threshold"):
        a, b = getattr(sae, name), getattr(e.sae, name)
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), name
    _same_encoding(sae, e.sae)


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
def test_sae_lens_reads_our_directories_and_we_read_theirs(tmp_path, activation):
    sae_lens = pytest.importorskip("sae_lens")
    sae = make_sae(torch.Generator().manual_seed(2), 24, 40, activation, k=5)
    save_sae_dir(tmp_path / "ours", sae, HookPoint(2, "post"), "fake")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "ours"))
    assert theirs.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    x = torch.randn(7, 24)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), encode_pool(x[:, None], torch.ones(7, dtype=torch.long),
                                                                 sae, backend="reference").float(),
                                   rtol=1e-5, atol=1e-5)
    theirs.save_model(str(tmp_path / "theirs"))
    back = load_sae_dir(tmp_path / "theirs")
    assert back.hook == HookPoint(2, "post")
    _same_encoding(sae, back.sae)


def test_bank_from_folder_and_checks(tmp_path):
    g = torch.Generator().manual_seed(3)
    for L in (0, 2, 5):
        save_sae_dir(tmp_path / f"blocks.{L}.hook_resid_post", make_sae(g, 24, 30, "topk", k=4), HookPoint(L, "post"))
    bank = load_bank(str(tmp_path), lm=FakeLM())
    assert bank.layers == [0, 2, 5] and bank[5].hook == HookPoint(5, "post")
    assert load_bank(str(tmp_path), layers=[2]).layers == [2]
    with pytest.raises(ValueError, match="d_in=24 but fake is 32 wide"):
        load_bank(str(tmp_path), lm=FakeLM(d_model=32))
    with pytest.raises(ValueError, match="only 5 layers"):
        load_bank(str(tmp_path), lm=FakeLM(n_layers=5))
    save_sae_dir(tmp_path / "dup", make_sae(g, 24, 30, "relu"), HookPoint(2, "post"))
    with pytest.raises(ValueError, match="two SAEs for layer 2"):
        load_bank(str(tmp_path))


def test_bank_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRSTEER_SAE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="train-sae"):
        load_bank("trained", lm=FakeLM())
    with pytest.raises(FileNotFoundError, match="not a sae-lens"):
        load_sae_dir(tmp_path)
    with pytest.raises(ValueError, match="no id template"):
        load_bank("release:unknown-release", layers=[0])


def test_decoder_norm_rescaling_is_folded_like_sae_lens(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    import json
    sae = make_sae(torch.Generator().manual_seed(4), 24, 40, "topk", k=5)
    sae.W_dec.mul_(1 + torch.rand(40, 1, generator=torch.Generator().manual_seed(5)))
    save_sae_dir(tmp_path / "r", sae, HookPoint(1, "post"))
    cfg = json.loads((tmp_path / "r" / "cfg.json").read_text())
    cfg["rescale_acts_by_decoder_norm"] = True
    (tmp_path / "r" / "cfg.json").write_text(json.dumps(cfg))
    ours, theirs = load_sae_dir(tmp_path / "r").sae, sae_lens.SAE.load_from_disk(str(tmp_path / "r"))
    x = torch.randn(6, 24)
    with torch.no_grad():
        want = theirs.encode(x)
    got = encode_pool(x[:, None], torch.ones(6, dtype=torch.long), ours, backend="reference").float()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
