import pytest
import torch

from xmkd.distill.refinement import attention_weighted_pool, cross_modal_attention, refine_pair


def test_mean_weighting_by_hand() -> None:
    # one clip, 2 heads, 2 video patches, 3 audio patches
    v = torch.tensor([[[0.6, 0.2], [0.1, 0.5]]])
    a = torch.tensor([[[0.3, 0.3, 0.3], [0.1, 0.1, 0.1]]])
    # head 0: v * 0.3 / 0.4 ; head 1: v * 0.1 / 0.3 ; averaged over heads
    h0 = torch.tensor([0.6, 0.2]) * 0.3 / 0.4
    h1 = torch.tensor([0.1, 0.5]) * 0.1 / 0.3
    torch.testing.assert_close(cross_modal_attention(v, a, "mean"), ((h0 + h1) / 2).unsqueeze(0))
    soft = cross_modal_attention(v, a, "softmax")
    e0 = (torch.tensor([0.6, 0.2]) * 0.3).softmax(0)
    e1 = (torch.tensor([0.1, 0.5]) * 0.1).softmax(0)
    torch.testing.assert_close(soft, ((e0 + e1) / 2).unsqueeze(0))


def test_pool_keeps_norm_of_plain_mean_and_uniform_is_plain_mean() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4)
    att = torch.rand(3, 5)
    pooled = attention_weighted_pool(x, att)
    torch.testing.assert_close(pooled.norm(dim=-1), x.mean(1).norm(dim=-1))
    direction = (x * att.unsqueeze(-1)).mean(1)
    torch.testing.assert_close(
        pooled / pooled.norm(dim=-1, keepdim=True), direction / direction.norm(dim=-1, keepdim=True)
    )
    torch.testing.assert_close(attention_weighted_pool(x, torch.full((3, 5), 0.2)), x.mean(1))


def test_refine_pair_shapes_and_head_mismatch() -> None:
    rv, ra = refine_pair(torch.randn(2, 4, 8), torch.rand(2, 3, 4), torch.randn(2, 6, 8), torch.rand(2, 3, 6))
    assert rv.shape == (2, 8) and ra.shape == (2, 8)
    with pytest.raises(ValueError, match="head count"):
        cross_modal_attention(torch.rand(2, 3, 4), torch.rand(2, 2, 4))
