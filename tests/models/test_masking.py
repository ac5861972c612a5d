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
    # the visible tokens lead the shuffle that restore_indices undoes: restore[keep[j]] == j
    kept = m.keep_indices.shape[1]
    assert torch.equal(m.restore_indices.gather(1, m.keep_indices), torch.arange(kept).expand(4, kept))
    # what the MAE decoder does: the encoded visible tokens, then mask tokens, put back in place
    x = torch.randn(4, 20, 3)
    decoder_in = torch.cat([gather_tokens(x, m.keep_indices), torch.zeros(4, 20 - kept, 3)], 1)
    restored = gather_tokens(decoder_in, m.restore_indices)
    assert torch.equal(restored[~m.mask], x[~m.mask])
    assert (restored[m.mask] == 0).all()


def test_samples_are_masked_independently() -> None:
    m = random_masking(8, 100, 0.5, generator=torch.Generator().manual_seed(2))
    assert len({tuple(r.tolist()) for r in m.mask}) == 8


def test_bad_ratio() -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        num_visible_tokens(10, 1.0)
