"""Multi-kernel Gaussian MMD^2 (biased estimator) for XKD's domain alignment.

Kernel parameterisation: k(x, y) = sum_gamma exp(-gamma * ||x - y||^2) with gamma in
{1e-3, 1e-2, 0.1, 1, 10, 100, 1000} (a sum of Gaussian kernels of bandwidths sigma^2 = 1 / (2 gamma)),
as in DomainBed's MMD and the XKD release. The biased estimator averages over all pairs including
the diagonal: MMD^2 = mean K(x, x) + mean K(y, y) - 2 mean K(x, y).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_GAMMAS: tuple[float, ...] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """||x_i - y_j||^2 for (N, D) and (M, D) -> (N, M), via one matmul, clamped at 0."""
    xx = x.pow(2).sum(dim=-1, keepdim=True)
    yy = y.pow(2).sum(dim=-1, keepdim=True)
    return torch.addmm(yy.transpose(0, 1), x, y.transpose(0, 1), alpha=-2).add_(xx).clamp_min_(0.0)


def multi_gaussian_kernel(x: Tensor, y: Tensor, gammas: Sequence[float] = DEFAULT_GAMMAS) -> Tensor:
    """sum_gamma exp(-gamma * ||x_i - y_j||^2) -> (N, M)."""
    d2 = squared_distances(x, y)
    g = torch.tensor(list(gammas), dtype=d2.dtype, device=d2.device).view(-1, 1, 1)
    return torch.exp(-g * d2.unsqueeze(0)).sum(dim=0)


def mmd2(x: Tensor, y: Tensor, gammas: Sequence[float] = DEFAULT_GAMMAS) -> Tensor:
    """Biased multi-kernel MMD^2 between samples ``x`` (N, D) and ``y`` (M, D), in float32."""
    x, y = x.float(), y.float()
    return (
        multi_gaussian_kernel(x, x, gammas).mean()
        + multi_gaussian_kernel(y, y, gammas).mean()
        - 2.0 * multi_gaussian_kernel(x, y, gammas).mean()
    )
