import math

import torch

from xmkd.distill.mmd import DEFAULT_GAMMAS, mmd2, squared_distances


def _loop_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    def k(a, b) -> float:
        d2 = sum((ai - bi) ** 2 for ai, bi in zip(a.tolist(), b.tolist()))
        return sum(math.exp(-g * d2) for g in DEFAULT_GAMMAS)

    kxx = sum(k(a, b) for a in x for b in x) / (len(x) ** 2)
    kyy = sum(k(a, b) for a in y for b in y) / (len(y) ** 2)
    kxy = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return kxx + kyy - 2 * kxy


def test_matches_direct_double_loop() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3) * 0.5
    y = torch.randn(4, 3) * 0.5 + 0.3
    assert abs(mmd2(x, y).item() - _loop_mmd2(x, y)) < 1e-5


def test_properties_and_gradient() -> None:
    x = torch.randn(6, 4, requires_grad=True)
    assert abs(mmd2(x.detach(), x.detach()).item()) < 1e-5
    loss = mmd2(x, torch.randn(6, 4) + 2)
    assert loss.item() > 0
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    a, b = torch.randn(3, 5), torch.randn(4, 5)
    torch.testing.assert_close(squared_distances(a, b), torch.cdist(a, b) ** 2, atol=1e-5, rtol=1e-4)
