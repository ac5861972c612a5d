"""DINO-style projector head used by XKD students and teachers (METHODS.md part A).

pooled (B, D) -> [Linear + LayerNorm + GELU] x (num_layers - 1) -> Linear -> bottleneck -> L2-normalise
-> weight-normalised Linear (gain fixed at 1, not trained) -> LayerNorm(out_dim, no affine).
The pooling (mean of the patch tokens, CLS excluded) is done by the caller: see
:func:`mean_patch_tokens` and ``xmkd.distill.refinement`` for the teachers' refined pooling.
Without the LayerNorms the cross-modal KD collapses, according to the XKD authors.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from xmkd.models.linear import Linear


def mean_patch_tokens(tokens: Tensor) -> Tensor:
    """Mean of the patch tokens of (B, 1 + N, D) encoder output, CLS excluded -> (B, D)."""
    return tokens[:, 1:].mean(dim=1)


class DINOHead(nn.Module):
    """Projector: MLP with LayerNorm + GELU, L2-normalised bottleneck, weight-normed last layer."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 8192,
        num_layers: int = 3,
        output_norm: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2, got {num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [Linear(dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU()]
            dim = hidden_dim
        layers.append(Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(Linear(bottleneck_dim, out_dim, bias=False))
        # DINO's fixed gain: g = 1 and frozen, so only the direction of each output row is learnt.
        gain = self.last_layer.parametrizations.weight.original0
        gain.data.fill_(1.0)
        gain.requires_grad_(False)
        self.out_norm = nn.LayerNorm(out_dim, elementwise_affine=False) if output_norm else nn.Identity()

    def forward(self, pooled: Tensor) -> Tensor:
        x = F.normalize(self.mlp(pooled), dim=-1, p=2)
        return self.out_norm(self.last_layer(x))
