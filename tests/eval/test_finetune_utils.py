"""Layer-wise lr decay, mixup / cutmix soft targets, and the soft-target cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xmkd.eval.finetune_utils import (
    layer_decay_param_groups,
    mix_batch,
    rand_box,
    smooth_one_hot,
    soft_target_cross_entropy,
    vit_layer_id,
)
from xmkd.models.vit import ViTEncoder, video_encoder_config


class _Classifier(nn.Module):
    def __init__(self, depth: int) -> None:
        super().__init__()
        self.encoder = ViTEncoder(video_encoder_config("tiny", 4, 32, 2, 16, depth=depth))
        self.head = nn.Linear(192, 5)


def test_layer_ids() -> None:
    assert vit_layer_id("encoder.pos_embed", 4) == 0
    assert vit_layer_id("encoder.patch_embed.weight", 4) == 0
    assert vit_layer_id("encoder.cls_token", 4) == 0
    assert vit_layer_id("encoder.blocks.0.attn.qkv.weight", 4) == 1
    assert vit_layer_id("encoder.blocks.3.mlp.0.bias", 4) == 4
    assert vit_layer_id("encoder.norm.weight", 4) == 5
    assert vit_layer_id("head.weight", 4) == 5


def test_layer_decay_gives_each_parameter_lr_times_decay_power() -> None:
    depth, lr, decay = 3, 1e-3, 0.45
    model = _Classifier(depth)
    groups = layer_decay_param_groups(model, lr, 0.05, decay, depth)
    by_param = {id(p): g for g in groups for p in g["params"]}
    expected_layer = {
        "encoder.pos_embed": 0,
        "encoder.blocks.0.norm1.weight": 1,
        "encoder.blocks.2.mlp.2.weight": 3,
        "encoder.norm.bias": 4,
        "head.weight": 4,
    }
    params = dict(model.named_parameters())
    for name, layer in expected_layer.items():
        g = by_param[id(params[name])]
        assert g["lr"] == pytest.approx(lr * decay ** (depth + 1 - layer)), name
    assert by_param[id(params["head.weight"])]["lr"] == pytest.approx(lr)
    assert by_param[id(params["encoder.patch_embed.weight"])]["lr"] == pytest.approx(lr * decay**4)
    # weight decay: matrices yes; biases, norms, pos_embed, cls_token no
    assert by_param[id(params["head.weight"])]["weight_decay"] == 0.05
    for name in ("head.bias", "encoder.norm.weight", "encoder.pos_embed", "encoder.cls_token"):
        assert by_param[id(params[name])]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(params)


def test_layer_decay_works_with_a_lambda_schedule() -> None:
    model = _Classifier(2)
    groups = layer_decay_param_groups(model, 1.0, 0.0, 0.5, 2)
    opt = torch.optim.AdamW(groups, lr=1.0)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * g["lr_scale"] for g in groups])


def test_smooth_one_hot() -> None:
    t = smooth_one_hot(torch.tensor([2, 0]), 4, 0.1)
    assert t[0].tolist() == pytest.approx([0.025, 0.025, 0.925, 0.025])
    assert torch.allclose(t.sum(1), torch.ones(2))


def test_mixup_blends_inputs_and_targets_with_the_same_lambda() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 2, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    out = mix_batch(x, y, 5, mixup_alpha=0.6, cutmix_alpha=0.0, smoothing=0.0, generator=g)
    assert out.mode == "mixup" and 0 < out.lam < 1
    assert torch.allclose(out.inputs, out.lam * x + (1 - out.lam) * x.flip(0))
    assert torch.allclose(out.targets.sum(1), torch.ones(4))
    assert out.targets[0, 0] == pytest.approx(out.lam) and out.targets[0, 3] == pytest.approx(1 - out.lam)


def test_cutmix_lambda_is_the_box_area_actually_kept() -> None:
    x = torch.zeros(2, 3, 4, 10, 12)
    x[1] = 1.0  # the reversed batch pastes ones into sample 0
    y = torch.tensor([0, 1])
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        out = mix_batch(x, y, 3, mixup_alpha=0.0, cutmix_alpha=0.5, smoothing=0.1, generator=g)
        assert out.mode == "cutmix"
        pasted = out.inputs[0, 0, 0].mean().item()  # fraction of sample 0's pixels from sample 1
        assert 1 - pasted == pytest.approx(out.lam, abs=1e-6)
        # the same box on every frame and channel
        assert torch.equal(out.inputs[0, :, :1].expand_as(out.inputs[0]), out.inputs[0])
        assert torch.allclose(out.targets.sum(1), torch.ones(2))
        off = 0.1 / 3
        assert out.targets[0, 0].item() == pytest.approx(out.lam * (1 - 0.1 + off) + (1 - out.lam) * off)


def test_switch_between_mixup_and_cutmix_and_spectrograms() -> None:
    g = torch.Generator().manual_seed(3)
    modes = {
        mix_batch(torch.randn(2, 8, 16), torch.tensor([0, 1]), 2, 1.0, 1.0, generator=g).mode
        for _ in range(30)
    }
    assert modes == {"mixup", "cutmix"}
    none = mix_batch(torch.randn(2, 8, 16), torch.tensor([0, 1]), 2, 0.0, 0.0, smoothing=0.0)
    assert none.mode == "none" and none.targets.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_rand_box_is_clipped_to_the_frame() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        y0, y1, x0, x1 = rand_box(7, 9, 0.3, g)
        assert 0 <= y0 <= y1 <= 7 and 0 <= x0 <= x1 <= 9


def test_gamma_sampler_mean() -> None:
    g = torch.Generator().manual_seed(0)
    lams = [
        mix_batch(torch.randn(2, 4, 4), torch.tensor([0, 1]), 2, 0.6, 0.0, generator=g).lam
        for _ in range(400)
    ]
    assert sum(lams) / len(lams) == pytest.approx(0.5, abs=0.05)  # Beta(a, a) has mean 1/2
    var = sum((v - 0.5) ** 2 for v in lams) / len(lams)
    assert var == pytest.approx(1 / (4 * (2 * 0.6 + 1)), rel=0.25)


def test_soft_target_cross_entropy_matches_hard_ce_and_label_smoothing() -> None:
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 3, 1, 1, 2])
    assert soft_target_cross_entropy(logits, F.one_hot(labels, 4).float()).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6
    )
    smoothed = soft_target_cross_entropy(logits, smooth_one_hot(labels, 4, 0.1))
    assert smoothed.item() == pytest.approx(
        F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-6
    )
    assert math.isfinite(smoothed.item())
