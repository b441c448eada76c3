"""SAEWeights.from_sae_lens against sae-lens's own encode/decode (skipped when sae-lens is not installed)."""
import pytest
import torch

from corrsteer_kernels import SAEWeights, encode_pool, steering_vectors

sae_lens = pytest.importorskip("sae_lens")


def build(arch, d_in=24, d_sae=57, seed=0, **cfg_kw):
    gen = torch.Generator().manual_seed(seed)
    if arch == "standard":
        sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=d_in, d_sae=d_sae, **cfg_kw))
    elif arch == "jumprelu":
        sae = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, **cfg_kw))
    else:
        sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=5, **cfg_kw))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            scale = 1 / d_in ** 0.5 if p.dim() == 2 else 0.2
            p.copy_(scale * torch.randn(p.shape, generator=gen))
        if arch == "jumprelu":
            sae.threshold.copy_(0.3 * torch.rand(d_sae, generator=gen))
        if arch == "topk" and cfg_kw.get("rescale_acts_by_decoder_norm"):
            sae.W_dec.mul_(1 + torch.rand(d_sae, 1, generator=gen))     # uneven decoder norms
    return sae


CASES = [("standard", {}), ("standard", {"apply_b_dec_to_input": False}), ("jumprelu", {}), ("topk", {}),
         ("topk", {"rescale_acts_by_decoder_norm": True})]


@pytest.mark.parametrize("arch,cfg", CASES)
@pytest.mark.parametrize("pool", ["max", "mean"])
def test_encode_pool_matches_sae_lens_encode(arch, cfg, pool):
    sae = build(arch, **cfg)
    w = SAEWeights.from_sae_lens(sae)
    x = torch.randn(3, 9, 24, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([9, 1, 4])
    with torch.no_grad():
        acts = sae.encode(x)                                           # [3, 9, d_sae]
    valid = torch.arange(9)[None, :, None] < lengths[:, None, None]
    acts = acts * valid
    want = acts.amax(1) if pool == "max" else acts.sum(1) / lengths[:, None]
    assert want.abs().sum() > 0
    got = encode_pool(x, lengths, w, pool, backend="reference").float()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(encode_pool(x, lengths, w, pool, backend="torch"), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,cfg", CASES)
def test_steering_vector_is_the_decoded_direction(arch, cfg):
    """coef * W_dec[j] (as converted) equals sae.decode(coef * e_j) - sae.decode(0)."""
    sae = build(arch, **cfg)
    w = SAEWeights.from_sae_lens(sae)
    feats, coefs = [3, 40], [2.5, -1.0]
    acts = torch.zeros(2, sae.cfg.d_sae)
    acts[0, 3], acts[1, 40] = 2.5, -1.0
    with torch.no_grad():
        want = sae.decode(acts) - sae.decode(torch.zeros(1, sae.cfg.d_sae))
    torch.testing.assert_close(steering_vectors(w, torch.tensor(feats), torch.tensor(coefs)), want,
                               rtol=1e-5, atol=1e-6)


def test_unsupported_sae_lens_config_raises():
    sae = build("standard", normalize_activations="layer_norm")
    with pytest.raises(ValueError, match="normalize_activations"):
        SAEWeights.from_sae_lens(sae)
