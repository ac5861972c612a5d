"""The GPU recipe's code paths, exercised on the CPU: bf16 autocast and the fused attention kernel.

The ViT-B recipes train with ``precision: bf16-mixed`` on GPUs, which no CI machine has. What can be
checked here: a whole XKD training step runs under CPU bf16 autocast with finite loss and gradients
close to float32's, the float32 islands (log-mel, losses) stay float32, and every attention call,
packed or not, is accepted by the flash-attention kernel alone (a head dimension that is not
contiguous or a dropout would make SDPA fall back to its slow math path on a GPU; restricted to
the flash backend it raises instead).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from xmkd.models.vit import PackedInput, ViTEncoder, video_encoder_config
from xmkd.modules.xkd import XKDPretrainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(
    encoder_size="tiny", encoder_depth=2, num_frames=8, img_size=32, tubelet=4, patch_size=16,
    audio_frames=64, audio_patch=(16, 16), audio_local_frames=32, decoder_dim=32, decoder_depth=1,
    decoder_heads=2, head_hidden_dim=32, head_bottleneck_dim=16, head_out_dim=64,
    recon_log_every_n_epochs=0,
)  # fmt: skip
SAMPLES = 143 * 63  # 64 spectrogram frames


def batch(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "video": torch.randn(b, 3, 8, 32, 32, generator=g),
        "video_local": torch.randn(b, 1, 3, 4, 16, 16, generator=g),
        "audio": 0.1 * torch.randn(b, SAMPLES, generator=g),
    }


def losses_and_grads(model: XKDPretrainer, bf16: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    views = model._batch_views(batch())
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model.compute_losses(*views, update_centers=False)
    out["loss"].backward()
    return out["loss"].detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_xkd_step_under_cpu_bf16_autocast_tracks_float32() -> None:
    torch.manual_seed(0)
    model = XKDPretrainer(**TINY).train()
    loss32, grads32 = losses_and_grads(model, bf16=False)
    loss16, grads16 = losses_and_grads(model, bf16=True)
    assert loss16.dtype == torch.float32  # the loss is a float32 island
    assert torch.isfinite(loss16) and abs(float(loss16 - loss32)) < 0.05 * abs(float(loss32))
    assert grads16.keys() == grads32.keys() and len(grads16) > 50
    cosines = []
    for name, g in grads32.items():
        assert torch.isfinite(grads16[name]).all(), name
        assert grads16[name].dtype == torch.float32, name  # master weights stay float32
        if g.norm() > 0:
            cosines.append(
                float(torch.nn.functional.cosine_similarity(g.flatten(), grads16[name].flatten(), 0))
            )
    # bf16 keeps ~3 significant digits: gradients point the same way, not to the last bit
    assert sorted(cosines)[len(cosines) // 2] > 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_attention_call_takes_the_flash_kernel(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    config = video_encoder_config("tiny", num_frames=8, img_size=32, tubelet=4, patch=16, depth=2)
    enc = ViTEncoder(config).train()
    x, local = torch.randn(2, 3, 8, 32, 32), torch.randn(3, 3, 4, 16, 16)
    keep = torch.stack([torch.randperm(8)[:3] for _ in range(2)])
    with (
        sdpa_kernel([SDPBackend.FLASH_ATTENTION]),
        torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32),
    ):
        packed = enc.forward_many([PackedInput(x, keep), PackedInput(local)])
        single, attn = enc.forward_with_attention(x, keep)
        sum(t.float().sum() for t in [*packed, single]).backward()
    assert attn is not None and attn.shape == (2, config.num_heads, 3)


def test_restricting_to_flash_fails_loudly_on_what_flash_cannot_take() -> None:
    # the check above can fail: a head dimension that is not contiguous (e.g. q, k, v permuted the
    # wrong way) is outside every fused kernel, CPU and GPU alike
    q = torch.randn(1, 2, 5, 8)
    strided = q.transpose(-1, -2).contiguous().transpose(-1, -2)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), pytest.raises(RuntimeError, match="No available kernel"):
        torch.nn.functional.scaled_dot_product_attention(strided, q, q)
