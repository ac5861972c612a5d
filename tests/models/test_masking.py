import pytest
import torch

from xmkd.models.masking import gather_tokens, num_visible_tokens, random_masking


@pytest.mark.parametrize(
    ("n", "ratio", "kept"), [(392, 0.85, 59), (560, 0.80, 112), (8, 0.85, 1), (10, 0.5, 5)]
)
def test_keeps_exactly_the_configured_count(n: int, ratio: float, kept: int) -> None:
    assert num_visible_tokens(n, ratio) == kept
    m = random_masking(6, n, ratio, generator=torch.Generator().manual_seed(0))
    assert m.keep_indices.shape == (6, kept)
    assert (m.mask.sum(dim=1) == n - kept).all()


def test_keep_indices_mask_and_restore_agree() -> None:
    m = random_masking(4, 20, 0.75, generator=torch.Generator().manual_seed(1))
    for b in range(4):
        visible = set(m.keep_indices[b].tolist())
        assert visible == set(torch.nonzero(~m.mask[b]).flatten().tolist())
    x = torch.randn(4, 20, 3)
    shuffled = gather_tokens(x, torch.cat([m.keep_indices, torch.nonzero(m.mask)[:, 1].view(4, -1)], 1))
    # restoring a (visible + masked) shuffle in the same noise order gives the original back
    full_order = torch.argsort(m.restore_indices, dim=1)
    assert torch.equal(gather_tokens(gather_tokens(x, full_order), m.restore_indices), x)
    assert shuffled.shape == x.shape


def test_samples_are_masked_independently() -> None:
    m = random_masking(8, 100, 0.5, generator=torch.Generator().manual_seed(2))
    assert len({tuple(r.tolist()) for r in m.mask}) == 8


def test_bad_ratio() -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        num_visible_tokens(10, 1.0)
