"""``xmkd.models.linear``: oneDNN's float32 linear agrees with a float64 reference as closely as
``F.linear`` does, in values and in all three gradients, and steps aside wherever it must."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xmkd.models.linear as lin
from xmkd.models.linear import ENV_SWITCH, Linear, linear, onednn_linear_available

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="no oneDNN linear on this machine")


def inputs(shape: tuple[int, ...], out: int, bias: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, requires_grad=True)
    w = torch.randn(out, shape[-1], generator=g, requires_grad=True)
    b = torch.randn(out, generator=g, requires_grad=True) if bias else None
    return x, w, b


def value_and_grads(fn, x, w, b, upstream):
    y = fn(x, w, b)
    params = [t for t in (x, w, b) if t is not None]
    return (y, *torch.autograd.grad(y, params, upstream))


@needs_onednn
@pytest.mark.parametrize("shape", [(37, 96), (2, 19, 96), (3, 5, 7, 96)])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_match_float64_as_closely_as_f_linear(shape, bias) -> None:
    x, w, b = inputs(shape, 130, bias)
    upstream = torch.randn(*shape[:-1], 130, generator=torch.Generator().manual_seed(1))
    ref = value_and_grads(
        F.linear,
        x.double(),
        w.double(),
        None if b is None else b.double(),
        upstream.double(),
    )
    ours = value_and_grads(linear, x, w, b, upstream)
    aten = value_and_grads(F.linear, x, w, b, upstream)
    assert len(ours) == len(ref) == len(aten)
    for o, a, r in zip(ours, aten, ref):
        assert o.shape == r.shape and o.dtype == torch.float32
        scale = float(r.abs().max())
        err, err_aten = float((o.double() - r).abs().max()), float((a.double() - r).abs().max())
        assert err <= max(4 * err_aten, 1e-6 * scale), (err, err_aten, scale)


@needs_onednn
def test_the_onednn_kernel_runs_on_float32_cpu_and_not_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = lin._onednn
    monkeypatch.setattr(lin, "_onednn", lambda *a: calls.append(1) or real(*a))
    layer = Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    layer(x).sum().backward()
    assert len(calls) == 3  # forward, input gradient, weight gradient
    with torch.no_grad():
        layer(x)
    assert len(calls) == 4
    calls.clear()
    layer.double()(x.double().detach())  # float64: F.linear
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = Linear(8, 4)(x.detach())
    assert out.dtype == torch.bfloat16  # autocast still applies
    monkeypatch.setenv(ENV_SWITCH, "0")
    Linear(8, 4)(x.detach())
    assert calls == []


def test_switched_off_it_is_f_linear_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SWITCH, "0")
    torch.manual_seed(0)
    ours, plain = Linear(16, 8), nn.Linear(16, 8)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(5, 16)
    assert torch.equal(ours(x), plain(x))


def test_drop_in_for_nn_linear_state_dict_and_trace() -> None:
    plain = nn.Linear(6, 3)
    ours = Linear(6, 3)
    ours.load_state_dict(plain.state_dict())
    assert isinstance(ours, nn.Linear) and ours.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 6)
    torch.testing.assert_close(ours(x), plain(x))
    traced = torch.jit.trace(ours, x)  # exporters record plain aten::linear
    assert "mkldnn" not in str(traced.graph) and "linear" in str(traced.graph)
    torch.testing.assert_close(traced(x), plain(x))
