"""PDAN / MS-TCN heads: the DAL against a loop implementation, padding invariance, masked BCE."""

from __future__ import annotations

import io
import math
from functools import partial

import numpy as np
import pytest
import torch

from xmkd.models import pdan_kernels
from xmkd.models.pdan_kernels import (
    _dropout_threshold,
    dilated_attention,
    dilated_attention_exportable,
    dilated_attention_reference,
    residual_dropout,
)
from xmkd.models.temporal import DilatedAttention, TemporalDetectionHead, masked_bce


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


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(("t", "d"), [(5, 1), (5, 4), (3, 4), (4, 4), (9, 16)])
def test_exportable_dal_matches_loop_for_any_length(t: int, d: int, relu: bool) -> None:
    """The exporters' DAL (no branch on T) against the loop, T below, at and above the dilation."""
    torch.manual_seed(0)
    layer = DilatedAttention(3, d).double()
    x = torch.randn(2, t, 3, dtype=torch.float64)
    wq, wk, wv = (w.detach().numpy() for w in layer.qkv.weight.chunk(3, 0))
    expected = dal_loop(x.numpy(), wq, wk, wv, layer.rel.detach().numpy(), d)
    got = dilated_attention_exportable(layer.qkv(x), layer.rel, d, relu=relu).detach().numpy()
    np.testing.assert_allclose(got, np.maximum(expected, 0) if relu else expected, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_a_saved_trace_of_the_head_takes_other_lengths() -> None:
    """Under torch.jit.trace the head records the exportable DAL: the trace at T = 12, saved and
    loaded, gives the module's scores at T = 3 (below the largest dilation) and T = 40. The windowed
    autograd Function is recorded as a Python call, which a saved TorchScript file cannot hold."""
    torch.manual_seed(0)
    head = TemporalDetectionHead("pdan", in_dim=6, num_classes=4, channels=8, num_blocks=4).eval()
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.jit.save(
            torch.jit.trace(head, (torch.randn(2, 12, 6), torch.ones(2, 12, dtype=torch.bool))), buffer
        )
    buffer.seek(0)
    traced = torch.jit.load(buffer)
    with torch.no_grad():
        for t in (3, 40):
            x, mask = torch.randn(2, t, 6), torch.ones(2, t, dtype=torch.bool)
            mask[1, t // 2 :] = False
            torch.testing.assert_close(traced(x, mask)[0], head(x, mask)[0], atol=1e-5, rtol=1e-5)


@pytest.fixture
def single_thread():
    """Tiny problems run single-threaded: on a shared 2-core machine, every op split over two threads
    waits for a descheduled worker (the old and the new head alike take 10x longer)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Run with 1 and 2 intra-op threads (the DAL spreads its windows over that many Python threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# window budgets (elements of (B, T, C)): whole batch, two videos per window, time windows of 1 and
# 2 steps (halos cross windows, dk/dv accumulate across them), the default
WINDOWS = [10**9, 2 * 6 * 3, 3, 6, pdan_kernels.CPU_WINDOW_ELEMENTS]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(("t", "d", "relu"), [(6, 1, False), (6, 2, True), (4, 8, False), (7, 3, True)])
def test_dal_custom_backward(
    t: int, d: int, relu: bool, window: int, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pdan_kernels, "CPU_WINDOW_ELEMENTS", window)
    torch.manual_seed(1)
    qkv = torch.randn(3, t, 9, dtype=torch.float64, requires_grad=True)
    rel = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)

    def oracle(a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        out = dilated_attention_reference(a, r, d)
        return out.relu() if relu else out

    ours = dilated_attention(qkv, rel, d, relu=relu)
    torch.testing.assert_close(ours, oracle(qkv, rel))
    f = partial(dilated_attention, dilation=d, relu=relu)
    assert torch.autograd.gradcheck(f, (qkv, rel), fast_mode=True)
    g = torch.randn(3, t, 3, dtype=torch.float64)
    grads = torch.autograd.grad((ours * g).sum(), (qkv, rel))
    expected = torch.autograd.grad((oracle(qkv, rel) * g).sum(), (qkv, rel))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)


def test_dal_float32_large_logits_match_reference() -> None:
    """exp is computed as exp2 with log2(e) folded into q: float32 stays within rounding of the oracle,
    also where the logits are large enough that the softmax saturates."""
    torch.manual_seed(2)
    qkv = (torch.randn(4, 40, 3 * 64) * torch.tensor([8.0, 1.0, 1.0]).repeat_interleave(64)).requires_grad_()
    rel = torch.randn(3, 64, requires_grad=True)
    g = torch.randn(4, 40, 64)
    ours = dilated_attention(qkv, rel, 4, relu=True)
    oracle = dilated_attention_reference(qkv, rel, 4).relu()
    torch.testing.assert_close(ours, oracle, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad((ours * g).sum(), (qkv, rel))
    expected = torch.autograd.grad((oracle * g).sum(), (qkv, rel))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_dropout_threshold() -> None:
    threshold, scale = _dropout_threshold(0.5)
    assert (threshold, scale) == (0, 2.0)  # int16 draws < 0: keep probability exactly 1/2
    threshold, scale = _dropout_threshold(0.1)
    keep = (threshold + 2**15) / 2**16
    assert abs(keep - 0.9) <= 2**-17 and scale == pytest.approx(1 / keep, rel=1e-12)


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_residual_dropout_values_rate_and_gradient(p: float, threads: int) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(4, 50, 64), torch.randn(4, 50, 64)
    valid = torch.ones(4, 50, 1)
    valid[1, 30:] = 0
    torch.manual_seed(1)
    out = residual_dropout(x, y, valid, p, training=True)
    _, scale = _dropout_threshold(p)
    kept = torch.isclose(out, (x + scale * y) * valid, rtol=1e-6, atol=1e-6)
    dropped = torch.isclose(out, x * valid, rtol=1e-6, atol=1e-6)
    assert bool((kept | dropped).all())
    on = valid.expand_as(x).bool()
    n = on.sum().item()
    rate = (kept & ~dropped)[on].double().mean().item()
    assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma
    assert out[1, 30:].abs().max() == 0
    # same seed, same mask; the backward uses the forward's draw
    torch.manual_seed(1)
    torch.testing.assert_close(residual_dropout(x, y, valid, p, training=True), out)
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    g = torch.randn_like(x)
    torch.manual_seed(1)
    dx, dy = torch.autograd.grad((residual_dropout(xg, yg, valid, p, True) * g).sum(), (xg, yg))
    torch.testing.assert_close(dx, g * valid)
    torch.testing.assert_close(dy, g * valid * torch.where(kept & ~dropped, scale, 0.0))
    # eval mode and p = 0 are the plain residual
    torch.testing.assert_close(residual_dropout(x, y, valid, p, training=False), (x + y) * valid)


def test_residual_dropout_gradcheck() -> None:
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([[1.0] * 5, [1.0] * 3 + [0.0] * 2], dtype=torch.float64).unsqueeze(-1)

    def f(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(3)  # the same draw at every call
        return residual_dropout(a, b, valid, 0.5, training=True)

    assert torch.autograd.gradcheck(f, (x, y))


def pdan_head_oracle(head: TemporalDetectionHead, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """PDAN stage by plain autograd ops (the released code's structure): 1x1 in, blocks
    ``(h + proj(relu(DAL(h)))) * valid`` with the oracle DAL, 1x1 out; eval mode (no dropout)."""
    (stage,) = head.stages
    h = stage.inp(x) * valid
    for block in stage.blocks:
        att = dilated_attention_reference(
            block.attention.qkv(h), block.attention.rel, block.attention.dilation
        )
        h = (h + block.proj(att.relu())) * valid
    return stage.out(h) * valid


def test_pdan_head_matches_plain_autograd_oracle() -> None:
    torch.manual_seed(0)
    head = TemporalDetectionHead("pdan", in_dim=6, num_classes=5, channels=8, num_blocks=4).double().eval()
    x = torch.randn(3, 20, 6, dtype=torch.float64)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, 12:] = False
    labels = (torch.rand(3, 20, 5) < 0.3).double()
    logits, _ = head(x, mask)
    expected = pdan_head_oracle(head, x, mask.unsqueeze(-1).double())
    torch.testing.assert_close(logits, expected)
    params = list(head.parameters())
    grads = torch.autograd.grad(masked_bce(logits, labels, mask), params)
    oracle_grads = torch.autograd.grad(masked_bce(expected, labels, mask), params)
    for a, b in zip(grads, oracle_grads):
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


def test_pdan_learns_a_tiny_problem(single_thread: None) -> None:
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


@pytest.mark.parametrize(
    "kind, activation, expected",
    [("pdan", "release", "logits"), ("mstcn", "release", "softmax"), ("pdan", "softmax", "softmax"),
     ("mstcn", "logits", "logits"), ("pdan", "sigmoid", "sigmoid")],
)  # fmt: skip
def test_later_stages_read_what_stage_activation_says(kind: str, activation: str, expected: str) -> None:
    """Stage 2's logits = stage 2 applied by hand to the chosen function of stage 1's logits (padded
    steps zeroed); ``release`` resolves to the release's choice for the kind (PDAN: raw logits,
    MS-TCN: softmax over classes)."""
    torch.manual_seed(0)
    head = TemporalDetectionHead(
        kind, in_dim=6, num_classes=4, channels=8, num_blocks=2, num_stages=2, stage_activation=activation
    ).eval()
    assert head.stage_activation == expected
    x = torch.randn(2, 9, 6)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    valid = mask.unsqueeze(-1).float()
    first, _ = head.stages[0](x, valid)
    by_hand = {
        "logits": first,
        "softmax": torch.exp(first) / torch.exp(first).sum(-1, keepdim=True),
        "sigmoid": 1 / (1 + torch.exp(-first)),
    }[expected]
    second, emb = head.stages[1](by_hand * valid, valid)
    stage_logits, head_emb = head.forward_stages(x, mask)
    torch.testing.assert_close(stage_logits[0], first)
    torch.testing.assert_close(stage_logits[1], second)
    torch.testing.assert_close(head_emb, emb)


def test_unknown_stage_activation_is_an_error() -> None:
    with pytest.raises(ValueError, match="stage_activation"):
        TemporalDetectionHead("pdan", in_dim=6, num_classes=4, channels=8, stage_activation="relu")
