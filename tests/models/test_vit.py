import numpy as np
import torch

from xmkd.models.heads import DINOHead
from xmkd.models.vit import (
    Attention,
    EncoderConfig,
    MAEDecoder,
    PackedInput,
    ViTEncoder,
    audio_encoder_config,
    build_encoder,
    count_parameters,
    interpolate_pos_embed,
    load_exported_encoder,
    masked_mse,
    normalized_patch_target,
    patchify_spectrogram,
    patchify_video,
    save_exported_encoder,
    unpatchify_spectrogram,
    unpatchify_video,
    video_encoder_config,
)


def tiny_video_cfg(**kw) -> EncoderConfig:
    return EncoderConfig("video", (4, 32, 32), (2, 16, 16), 3, dim=24, depth=2, num_heads=3, **kw)


def test_patchify_roundtrip_and_sizes() -> None:
    v = torch.randn(2, 3, 8, 32, 48)
    p = patchify_video(v, 4, 16)
    assert p.shape == (2, 2 * 2 * 3, 3072)
    # token 0 holds pixels of frames 0..3, rows 0..15, cols 0..15; channel fastest
    assert torch.equal(p[0, 0, :3], v[0, :, 0, 0, 0])
    assert torch.equal(unpatchify_video(p, (2, 2, 3), 4, 16), v)
    s = torch.randn(2, 1, 80, 32)
    ps = patchify_spectrogram(s)
    assert ps.shape == (2, 20 * 2, 64)
    assert torch.equal(unpatchify_spectrogram(ps, (20, 2)), s)


def test_sdpa_attention_matches_explicit_softmax_and_cls_row() -> None:
    torch.manual_seed(0)
    attn = Attention(12, 3)
    x = torch.randn(2, 5, 12)
    out, cls = attn(x, return_cls_attention=True)
    qkv = attn.qkv(x).reshape(2, 5, 3, 3, 4).permute(2, 0, 3, 1, 4)
    q, k, v = qkv
    w = (q @ k.transpose(-2, -1) / 2.0).softmax(-1)
    ref = attn.proj((w @ v).transpose(1, 2).reshape(2, 5, 12))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls, w[:, :, 0, 1:], atol=1e-6, rtol=1e-5)
    assert attn(x)[1] is None


def test_keep_indices_are_permutation_equivariant() -> None:
    torch.manual_seed(0)
    enc = ViTEncoder(tiny_video_cfg()).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    full = enc(x)
    perm = torch.stack([torch.randperm(8) for _ in range(2)])
    part = enc(x, perm)
    torch.testing.assert_close(
        part[:, 1:], full[:, 1:].gather(1, perm.unsqueeze(-1).expand(-1, -1, 24)), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(part[:, 0], full[:, 0], atol=1e-5, rtol=1e-4)
    tokens, attn = enc.forward_with_attention(x, perm[:, :3])
    assert tokens.shape == (2, 4, 24) and attn.shape == (2, 3, 3)
    torch.testing.assert_close(attn.sum(-1) <= 1.0, torch.ones(2, 3, dtype=torch.bool))


def test_forward_many_matches_one_forward_per_input_values_and_gradients() -> None:
    # masked global view + local views of another size and batch: one pass over all rows
    torch.manual_seed(0)
    enc = ViTEncoder(tiny_video_cfg()).train()
    x, local = torch.randn(2, 3, 4, 32, 32), torch.randn(3, 3, 2, 16, 16)
    keep = torch.stack([torch.randperm(8)[:3] for _ in range(2)])
    many = enc.forward_many([PackedInput(x, keep), PackedInput(local)])
    one = [enc(x, keep), enc(local)]
    assert [t.shape for t in many] == [(2, 4, 24), (3, 2, 24)]
    for a, b in zip(many, one):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    weights = [p for p in enc.parameters()]
    g_many = torch.autograd.grad(sum((t * t.detach().sin()).sum() for t in many), weights)
    g_one = torch.autograd.grad(sum((t * t.detach().sin()).sum() for t in one), weights)
    for a, b in zip(g_many, g_one):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # attention stays within each input: changing the local views leaves the global tokens alone
    again = enc.forward_many([PackedInput(x, keep), PackedInput(local + 1.0)])
    torch.testing.assert_close(again[0], many[0], atol=1e-6, rtol=0)
    assert not torch.allclose(again[1], many[1])


def test_forward_many_falls_back_per_input_with_stochastic_depth() -> None:
    torch.manual_seed(0)
    enc = ViTEncoder(tiny_video_cfg(drop_path=0.5)).train()
    x = torch.randn(2, 3, 4, 32, 32)
    torch.manual_seed(1)
    many = enc.forward_many([PackedInput(x), PackedInput(x[:1])])
    torch.manual_seed(1)
    one = [enc(x), enc(x[:1])]
    for a, b in zip(many, one):
        torch.testing.assert_close(a, b)


def test_local_views_use_interpolated_position_embeddings() -> None:
    enc = ViTEncoder(tiny_video_cfg())
    assert enc(torch.randn(1, 3, 2, 16, 16)).shape == (1, 2, 24)
    pe = torch.randn(1, 2 * 3 * 4, 5)
    assert interpolate_pos_embed(pe, (2, 3, 4), (2, 3, 4)) is pe
    const = torch.ones(1, 8, 5) * 3
    torch.testing.assert_close(
        interpolate_pos_embed(const, (2, 2, 2), (4, 6, 6)), torch.full((1, 144, 5), 3.0)
    )
    assert interpolate_pos_embed(torch.randn(40, 5), (20, 2), (20, 7)).shape == (140, 5)


def _interp_matrix(n_in: int, n_out: int, scale: float, kind: str) -> np.ndarray:
    """(n_out, n_in) weights of PyTorch's 1-D resampling with ``align_corners=False`` and a given
    ``scale_factor``, from the formulas: source x = (i + 0.5) / scale - 0.5; linear clamps x at 0
    and blends floor / floor + 1; cubic (Keys, a = -0.75) blends floor - 1 .. floor + 2, indices
    clamped to the border."""
    m = np.zeros((n_out, n_in))
    a = -0.75
    for i in range(n_out):
        x = (i + 0.5) / scale - 0.5
        if kind == "linear":
            x = max(x, 0.0)
            j = int(np.floor(x))
            w = x - j
            m[i, min(j, n_in - 1)] += 1 - w
            m[i, min(j + 1, n_in - 1)] += w
            continue
        j = int(np.floor(x))
        t = x - j
        for k, d in zip(range(j - 1, j + 3), (1 + t, t, 1 - t, 2 - t)):
            d = abs(d)
            w = ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
            m[i, min(max(k, 0), n_in - 1)] += w
    return m


def test_release_pos_embed_resize_is_scale_factor_n_plus_point_one() -> None:
    """Video: every axis resampled with scale (n + 0.1) / o (trilinear = separable linear); audio:
    frequency kept (scale 1), time bicubic with (n + 0.1) / o; both from the formulas above."""
    torch.manual_seed(0)
    old, new = (8, 7, 7), (2, 6, 6)  # the paper's global -> local video grid
    pe = torch.randn(1, 8 * 7 * 7, 4, dtype=torch.float64)
    ours = interpolate_pos_embed(pe, old, new, "scale_factor").reshape(*new, 4).numpy()
    mats = [_interp_matrix(o, n, (n + 0.1) / o, "linear") for o, n in zip(old, new)]
    ref = np.einsum("at,bh,cw,thwd->abcd", *mats, pe.reshape(*old, 4).numpy())
    np.testing.assert_allclose(ours, ref, atol=2e-5)  # resampled in float32
    size = interpolate_pos_embed(pe, old, new, "size").reshape(*new, 4).numpy()
    assert np.abs(size - ours).max() > 1e-3  # the two semantics really differ

    old, new = (20, 28), (20, 7)  # the paper's global -> local spectrogram grid
    pe = torch.randn(1, 20 * 28, 4, dtype=torch.float64)
    ours = interpolate_pos_embed(pe, old, new, "scale_factor").reshape(*new, 4).numpy()
    mat = _interp_matrix(28, 7, 7.1 / 28, "cubic")
    ref = np.einsum("bt,ftd->fbd", mat, pe.reshape(*old, 4).numpy())
    np.testing.assert_allclose(ours, ref, atol=2e-5)  # resampled in float32


def test_encoder_defaults_are_the_release_and_legacy_exports_rebuild_as_trained() -> None:
    enc = ViTEncoder(tiny_video_cfg())
    assert enc.norm.eps == 1e-5 and enc.blocks[0].norm1.eps == 1e-5
    assert enc.config.pos_embed_resize == "scale_factor"
    legacy = tiny_video_cfg().to_dict()
    del legacy["norm_eps"], legacy["pos_embed_resize"]  # a JSON exported before these knobs
    old = build_encoder(legacy)
    assert old.norm.eps == 1e-6 and old.blocks[1].norm2.eps == 1e-6 and old.config.pos_embed_resize == "size"


def test_decoder_matches_the_release_layout_by_default() -> None:
    dec = MAEDecoder(num_patches=8, encoder_dim=24, patch_dim=12, dim=24, depth=1)
    assert dec.blocks[0].attn.num_heads == 12 and dec.blocks[0].norm1.eps == 1e-5
    assert not any(k.startswith("norm.") for k in dec.state_dict())
    tokens = torch.randn(2, 3, 24)
    restore = torch.stack([torch.randperm(8) for _ in range(2)])
    # no norm between the last block and the prediction layer
    x = dec.embed(tokens)
    fill = dec.mask_token.expand(2, 8 + 1 - 3, 24)
    patches = torch.cat([x[:, 1:], fill], 1).gather(1, restore.unsqueeze(-1).expand(-1, -1, 24))
    h, _ = dec.blocks[0](torch.cat([x[:, :1], patches], 1) + dec.pos_embed)
    torch.testing.assert_close(dec(tokens, restore), dec.pred(h[:, 1:]))
    normed = MAEDecoder(num_patches=8, encoder_dim=24, patch_dim=12, dim=24, depth=1, final_norm=True)
    assert {"norm.weight", "norm.bias"} <= set(normed.state_dict())


def test_drop_path_only_in_training() -> None:
    torch.manual_seed(0)
    enc = ViTEncoder(tiny_video_cfg(drop_path=0.5))
    x = torch.randn(8, 3, 4, 32, 32)
    enc.eval()
    torch.testing.assert_close(enc(x), enc(x))
    enc.train()
    assert not torch.allclose(enc(x), enc(x))
    assert enc.blocks[0].drop_path.p == 0.0 and enc.blocks[-1].drop_path.p == 0.5


def test_base_parameter_counts() -> None:
    """Reference (PERFORMANCE.md): video 87.7M, audio 85.5M, head 8.4M; built on meta (no memory)."""
    with torch.device("meta"):
        video = ViTEncoder(video_encoder_config("base"))
        audio = ViTEncoder(audio_encoder_config("base"))
        head = DINOHead(768)
    assert round(count_parameters(video) / 1e6, 1) == 87.7
    assert round(count_parameters(audio) / 1e6, 1) == 85.5
    assert round(count_parameters(head) / 1e6, 1) == 8.4
    assert count_parameters(head) - count_parameters(head, trainable_only=True) == 8192  # the fixed gain


def test_norm_pix_target_and_masked_mse() -> None:
    p = torch.randn(2, 5, 16) * 3 + 1
    t = normalized_patch_target(p)
    torch.testing.assert_close(t.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.std(-1), torch.ones(2, 5), atol=1e-4, rtol=0)
    pred = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    expected = sum(((pred[b, i] - t[b, i]) ** 2).mean() for b in range(2) for i in range(5) if mask[b, i]) / 4
    torch.testing.assert_close(masked_mse(pred, t, mask), expected)


def test_decoder_predicts_every_patch_and_uses_mask_tokens() -> None:
    dec = MAEDecoder(num_patches=8, encoder_dim=24, patch_dim=1536, dim=16, depth=1, num_heads=2)
    tokens = torch.randn(2, 1 + 3, 24)
    restore = torch.stack([torch.randperm(8) for _ in range(2)])
    out = dec(tokens, restore)
    assert out.shape == (2, 8, 1536)
    out.sum().backward()
    assert dec.mask_token.grad is not None and dec.mask_token.grad.abs().sum() > 0


def test_head_shapes_and_frozen_gain() -> None:
    head = DINOHead(24, hidden_dim=32, bottleneck_dim=8, out_dim=64)
    y = head(torch.randn(5, 24))
    assert y.shape == (5, 64)
    torch.testing.assert_close(y.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)  # LayerNorm, no affine
    gain = head.last_layer.parametrizations.weight.original0
    assert not gain.requires_grad and torch.all(gain == 1)
    w = head.last_layer.weight
    torch.testing.assert_close(w.norm(dim=1), torch.ones(64))


def test_export_roundtrip(tmp_path) -> None:
    enc = ViTEncoder(EncoderConfig("audio", (8, 32), (4, 16), 1, dim=24, depth=2, num_heads=3))
    path = save_exported_encoder(enc, tmp_path / "aud.pt")
    state = torch.load(path, weights_only=True)
    assert set(state) == set(enc.state_dict())
    loaded = load_exported_encoder(path).eval()
    x = torch.randn(2, 8, 32)
    torch.testing.assert_close(loaded(x), enc.eval()(x))
