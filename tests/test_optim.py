import math

import torch
from torch import nn

from xmkd.optim import build_adamw, clip_grad_per_tensor_, param_groups_weight_decay, warmup_cosine_factor


def test_param_groups_exclude_biases_norms_frozen_and_duplicates() -> None:
    shared = nn.Linear(3, 3)
    model = nn.ModuleDict({"a": shared, "b": shared, "norm": nn.LayerNorm(3), "frozen": nn.Linear(3, 3)})
    model["frozen"].requires_grad_(False)
    decay, no_decay = param_groups_weight_decay(model, 0.3, lr=1e-4)
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0 and decay["lr"] == 1e-4
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 3])]
    assert {id(p) for p in no_decay["params"]} == {
        id(shared.bias),
        id(model["norm"].weight),
        id(model["norm"].bias),
    }


def test_warmup_from_zero_is_the_release_linspace() -> None:
    """The release's cosine_scheduler: warm-up np.linspace(0, base, W), then the same cosine."""
    w, total = 10, 110
    for step in range(w):
        assert abs(warmup_cosine_factor(step, w, total, from_zero=True) - step / 9) < 1e-12
    for step in (10, 35, 60, 109):
        assert warmup_cosine_factor(step, w, total, from_zero=True) == warmup_cosine_factor(step, w, total)
    assert warmup_cosine_factor(0, 1, total, from_zero=True) == 0.0  # linspace(0, 1, 1) == [0]


def test_warmup_cosine_values() -> None:
    assert warmup_cosine_factor(0, 10, 110) == 0.1
    assert warmup_cosine_factor(9, 10, 110) == 1.0
    assert warmup_cosine_factor(10, 10, 110) == 1.0
    assert abs(warmup_cosine_factor(60, 10, 110) - 0.5) < 1e-12
    assert abs(warmup_cosine_factor(110, 10, 110)) < 1e-12
    assert (
        abs(warmup_cosine_factor(35, 10, 110, 0.1) - (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25))))
        < 1e-12
    )


def test_per_tensor_clip_matches_dino_loop() -> None:
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 5)), nn.Parameter(torch.randn(7)), nn.Parameter(torch.randn(2))]
    params[0].grad = torch.randn(4, 5) * 10
    params[1].grad = torch.randn(7) * 0.01  # already small: untouched
    expected = []
    for p in params[:2]:
        g = p.grad.clone()
        coef = 0.3 / (g.norm() + 1e-6)
        expected.append(g * coef if coef < 1 else g)
    norms = clip_grad_per_tensor_(params, 0.3)
    for p, e in zip(params[:2], expected):
        torch.testing.assert_close(p.grad, e)
    assert params[2].grad is None and norms.shape == (2,)
    assert clip_grad_per_tensor_([nn.Parameter(torch.ones(1))], 0.3) is None


def test_adamw_is_fused_on_cpu() -> None:
    opt = build_adamw(param_groups_weight_decay(nn.Linear(2, 2), 0.3), lr=1e-3)
    assert opt.defaults["fused"] is True and opt.defaults["betas"] == (0.9, 0.95)
