"""``nn.Linear`` whose float32 CPU matmuls run through oneDNN instead of the BLAS ``torch.mm`` uses.

On x86 CPUs PyTorch sends float32 ``linear``/``mm`` to MKL's sgemm. On AMD processors MKL does not
take its AVX-512 kernels, while oneDNN (also inside PyTorch) picks its kernels from the instruction
set alone: on the 2-core AMD EPYC machines this project runs on, a ViT-B layer's forward + backward
is about 2x faster through oneDNN (``benchmarks/xkd_throughput.py``), and linear layers are ~75 %
of an XKD step. Both are float32 with float32 accumulation: results differ by float reordering
only (tested against a float64 reference).

:class:`Linear` is a drop-in ``nn.Linear`` (same parameters, state dict and init), whose forward
takes the oneDNN path when all of these hold, and ``F.linear`` otherwise: a float32 CPU input and
weight, no autocast, not under an exporter, TorchScript or ``torch.compile`` (inductor picks its own
kernels), an x86 processor with oneDNN in the PyTorch build, and ``XMKD_ONEDNN_LINEAR`` not ``0``.
"""

from __future__ import annotations

import functools
import os
import platform

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENV_SWITCH = "XMKD_ONEDNN_LINEAR"


@functools.cache
def onednn_linear_available() -> bool:
    """oneDNN's linear kernel is in this PyTorch build and the processor is x86-64."""
    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def onednn_linear_enabled() -> bool:
    """Available, and not switched off with ``XMKD_ONEDNN_LINEAR=0`` (read at each call)."""
    return os.environ.get(ENV_SWITCH, "1") != "0" and onednn_linear_available()


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias`` by oneDNN; ``weight`` may be a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad2 = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn(grad2, weight.t(), None).reshape(x.shape)  # grad @ W
        if ctx.needs_input_grad[1]:
            grad_w = _onednn(grad2.t(), x.reshape(-1, x.shape[-1]).t(), None)  # grad.T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad2.sum(0)
        return grad_x, grad_w, grad_b


def _recording() -> bool:
    """An exporter, TorchScript or ``torch.compile`` is recording: they get plain ``aten::linear``."""
    return (
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )


def _takes_onednn_path(x: Tensor, weight: Tensor) -> bool:
    if _recording() or not onednn_linear_enabled():
        return False
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` through oneDNN where that is faster and exact to float reordering (module doc)."""
    if not _takes_onednn_path(x, weight):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        return _OneDNNLinearFn.apply(x, weight, bias)
    return _onednn(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` with :func:`linear`'s forward (same parameters, state dict and init)."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
