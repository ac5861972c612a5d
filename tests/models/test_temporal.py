"""PDAN / MS-TCN heads: the DAL against a loop implementation, padding invariance, masked BCE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmkd.models.temporal import (
    DilatedAttention,
    TemporalDetectionHead,
    dilated_attention,
    dilated_attention_reference,
    masked_bce,
)


def dal_loop(
    x: np.ndarray, wq: np.ndarray, wk: np.ndarray, wv: np.ndarray, rel: np.ndarray, d: int
) -> np.ndarray:
    """DAL by loops: per channel softmax over keys at t-d, t, t+d (zero outside the sequence)."""
    b_, t_, c_ = x.shape
    q, k, v = x @ wq.T, x @ wk.T, x @ wv.T
    out = np.zeros((b_, t_, c_))
    for b in range(b_):
        for t in range(t_):
            for c in range(c_):
                logits, vals = [], []
                for j, off in enumerate((-d, 0, d)):
                    s = t + off
                    kk = k[b, s, c] if 0 <= s < t_ else 0.0
                    vv = v[b, s, c] if 0 <= s < t_ else 0.0
                    logits.append(q[b, t, c] * kk)
                    vals.append(vv + rel[j, c])
                e = np.exp(np.array(logits) - max(logits))
                out[b, t, c] = (e / e.sum() * np.array(vals)).sum()
    return out


@pytest.mark.parametrize("d", [1, 2, 4])
def test_dal_matches_loop(d: int) -> None:
    torch.manual_seed(0)
    layer = DilatedAttention(3, d).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    wq, wk, wv = (w.detach().numpy() for w in layer.qkv.weight.chunk(3, 0))
    expected = dal_loop(x.numpy(), wq, wk, wv, layer.rel.detach().numpy(), d)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("t", "d"), [(6, 1), (6, 2), (4, 8)])
def test_dal_custom_backward(t: int, d: int) -> None:
    torch.manual_seed(1)
    qkv = torch.randn(2, t, 9, dtype=torch.float64, requires_grad=True)
    rel = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, r: dilated_attention(a, r, d), (qkv, rel))
    g = torch.randn(2, t, 3, dtype=torch.float64)
    ours = torch.autograd.grad((dilated_attention(qkv, rel, d) * g).sum(), (qkv, rel))
    ref = torch.autograd.grad((dilated_attention_reference(qkv, rel, d) * g).sum(), (qkv, rel))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["pdan", "mstcn"])
@pytest.mark.parametrize("stages", [1, 2])
def test_head_shapes_and_padding_invariance(kind: str, stages: int) -> None:
    torch.manual_seed(0)
    head = TemporalDetectionHead(
        kind, in_dim=6, num_classes=4, channels=8, num_blocks=3, num_stages=stages
    ).eval()
    short = torch.randn(1, 5, 6)
    long = torch.randn(1, 11, 6)
    alone_logits, alone_emb = head(short, torch.ones(1, 5, dtype=torch.bool))
    assert alone_logits.shape == (1, 5, 4) and alone_emb.shape == (1, 5, 8)
    # the short video padded to 11 steps with garbage next to a long one
    batch = torch.cat([torch.cat([short, 100 * torch.randn(1, 6, 6)], 1), long])
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[0, :5] = True
    mask[1] = True
    logits, emb = head(batch, mask)
    torch.testing.assert_close(logits[0, :5], alone_logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb[0, :5], alone_emb[0], atol=1e-5, rtol=1e-5)
    assert logits[0, 5:].abs().max() == 0 and emb[0, 5:].abs().max() == 0
    stage_logits, _ = head.forward_stages(batch, mask)
    assert len(stage_logits) == stages


def test_masked_bce_matches_loop() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3)
    labels = (torch.rand(2, 4, 3) > 0.5).float()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    total, n = 0.0, 0
    for b in range(2):
        for t in range(4):
            if mask[b, t]:
                n += 1
                for c in range(3):
                    p = 1 / (1 + math.exp(-float(logits[b, t, c])))
                    y = float(labels[b, t, c])
                    total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    assert masked_bce(logits, labels, mask).item() == pytest.approx(total / n, rel=1e-6)
    # padded steps, whatever they hold, change nothing
    logits2 = logits.clone()
    logits2[~mask] = 50.0
    assert masked_bce(logits2, labels, mask).item() == pytest.approx(total / n, rel=1e-6)


def test_pdan_learns_a_tiny_problem() -> None:
    torch.manual_seed(0)
    head = TemporalDetectionHead("pdan", in_dim=4, num_classes=2, channels=16, num_blocks=2, dropout=0.0)
    x = torch.randn(4, 12, 4)
    labels = torch.stack([(x[..., 0] > 0), (x[..., 1] > 0)], -1).float()
    mask = torch.ones(4, 12, dtype=torch.bool)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        opt.zero_grad()
        loss = masked_bce(head(x, mask)[0], labels, mask)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
