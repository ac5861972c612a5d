"""MAE-style per-sample random token masking.

Each sample keeps exactly ``round((1 - ratio) * N)`` tokens, chosen by the argsort of uniform noise
(He et al., MAE). The masked global view then runs only its visible tokens through the encoder, and
the decoder puts them back in place with ``restore_indices``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TokenMask:
    """The result of :func:`random_masking` for a batch.

    ``keep_indices`` (B, K) are the visible token positions (in random order); ``mask`` (B, N) is
    True where a token is masked (hidden from the encoder, reconstructed by the decoder);
    ``restore_indices`` (B, N) undo the shuffle: ``shuffled.gather(1, restore_indices)`` is in the
    original order.
    """

    keep_indices: Tensor
    mask: Tensor
    restore_indices: Tensor

    @property
    def num_kept(self) -> int:
        return self.keep_indices.shape[1]


def num_visible_tokens(num_tokens: int, mask_ratio: float) -> int:
    """How many tokens survive masking: ``round((1 - ratio) * N)``, at least one."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, round((1.0 - mask_ratio) * num_tokens))


def random_masking(
    batch_size: int,
    num_tokens: int,
    mask_ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> TokenMask:
    """Draw an independent random mask per sample, keeping exactly the same count in each."""
    keep = num_visible_tokens(num_tokens, mask_ratio)
    noise = torch.rand(batch_size, num_tokens, device=device, generator=generator)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    keep_indices = shuffle[:, :keep]
    mask = torch.ones(batch_size, num_tokens, dtype=torch.bool, device=noise.device)
    mask[:, :keep] = False
    mask = mask.gather(1, restore)
    return TokenMask(keep_indices=keep_indices, mask=mask, restore_indices=restore)


def gather_tokens(tokens: Tensor, indices: Tensor) -> Tensor:
    """Select tokens (B, N, D) at ``indices`` (B, K) -> (B, K, D)."""
    return tokens.gather(1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
