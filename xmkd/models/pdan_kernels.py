"""PDAN's CPU kernels: the dilated attention layer (DAL) and the fused dropout + residual + mask,
as custom autograd functions that work window by window in cache, with plain reference versions.

The layout is (B, T, C): the DAL reads its three keys (t - d, t, t + d) as shifted slices of the
projected ``qkv`` (B, T, 3C), with no unfold, no T x T matrix and no copies of the (B, C, T, 3)
windows; forward and backward walk the sequence in windows of about ``CPU_WINDOW_ELEMENTS``
elements (several videos in parallel threads) and save only their inputs (plus 16-bit dropout
draws). :func:`dilated_attention_exportable` is the same DAL in recordable ops for exporters;
:func:`dilated_attention_reference` and the tests' loops check both. The heads that use them are
in :mod:`xmkd.models.temporal`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

R = TypeVar("R")

__all__ = [
    "CPU_WINDOW_ELEMENTS",
    "dilated_attention",
    "dilated_attention_exportable",
    "dilated_attention_reference",
    "is_exporting",
    "residual_dropout",
]


def _shift(x: Tensor, offset: int) -> Tensor:
    """``y[:, t] = x[:, t + offset]`` with zeros outside [0, T) — the zero padding of the released code."""
    if offset == 0:
        return x
    t = x.shape[1]
    if abs(offset) >= t:
        return torch.zeros_like(x)
    if offset > 0:
        return F.pad(x[:, offset:], (0, 0, 0, offset))
    return F.pad(x[:, :offset], (0, 0, -offset, 0))


def dilated_attention_reference(qkv: Tensor, rel: Tensor, dilation: int) -> Tensor:
    """Plain-autograd DAL on projected ``qkv`` (B, T, 3C) and ``rel`` (3, C); the test oracle."""
    q, k, v = qkv.chunk(3, dim=-1)
    d = dilation
    keys = (_shift(k, -d), k, _shift(k, d))
    values = (_shift(v, -d), v, _shift(v, d))
    weights = torch.softmax(torch.stack([q * key for key in keys], dim=0), dim=0)
    return sum(weights[j] * (values[j] + rel[j]) for j in range(3))


# Elementwise work on the CPU is done in windows of at most this many (B, T, C) elements. Below
# PyTorch's intra-op grain size (32768) every op runs on the calling thread, so there is no
# thread barrier per op (on a shared machine a barrier waits for a descheduled worker: milliseconds
# per op), and a window's dozen temporaries stay in L1/L2 instead of streaming 16 MB tensors
# through DRAM once per op. Windows are spread over ``torch.get_num_threads()`` Python threads
# (ops release the GIL), each owning whole videos so that no two threads write the same rows.
CPU_WINDOW_ELEMENTS = 32767
_LOG2E = 1.4426950408889634  # exp(x) = exp2(x log2 e); the exp kernel splits even small tensors over threads
_MIN_PARALLEL_WINDOWS = 8
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0


def _parallel_over_videos(
    fn: Callable[[int, int], R], batch: int, work: int, device: torch.device
) -> list[R]:
    """``fn(b0, b1)`` on disjoint video ranges covering [0, batch), on up to ``get_num_threads()``
    threads; one call inline on other devices, with one thread, or when the ``work`` (elements) is too
    small to pay for the hand-off. Results come in video order, so a reduction over them is
    deterministic."""
    global _pool, _pool_workers
    workers = min(torch.get_num_threads(), batch) if device.type == "cpu" else 1
    if workers <= 1 or work < _MIN_PARALLEL_WINDOWS * CPU_WINDOW_ELEMENTS:
        return [fn(0, batch)]
    if _pool is None or _pool_workers != workers:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_workers = ThreadPoolExecutor(workers, thread_name_prefix="xmkd-dal"), workers
    bounds = [batch * i // workers for i in range(workers + 1)]

    def no_grad_fn(b0: int, b1: int) -> R:  # grad mode is thread-local; the Function's is off
        with torch.no_grad():
            return fn(b0, b1)

    futures = [_pool.submit(no_grad_fn, bounds[i], bounds[i + 1]) for i in range(1, workers)]
    first = fn(bounds[0], bounds[1])
    return [first] + [f.result() for f in futures]


def _windows(b0: int, b1: int, t: int, c: int, budget: int) -> Iterator[tuple[slice, int, int]]:
    """(video slice, t0, t1) windows of at most ``budget`` elements covering videos [b0, b1):
    several whole videos per window when one fits, else time windows of one video."""
    if t * c <= budget:
        step = max(1, budget // (t * c))
        for b in range(b0, b1, step):
            yield slice(b, min(b1, b + step)), 0, t
    else:
        step = max(1, budget // c)
        for b in range(b0, b1):
            for t0 in range(0, t, step):
                yield slice(b, b + 1), t0, min(t, t0 + step)


def _window_budget(x: Tensor) -> int:
    return CPU_WINDOW_ELEMENTS if x.device.type == "cpu" else x.numel()


def _dal_window(
    q: Tensor, k: Tensor, v: Tensor, rel: Tensor, d: int, bs: slice, t0: int, t1: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int, int]:
    """Unnormalised softmax terms of the DAL over one window [t0, t1) of videos ``bs``.

    Returns ``(em, e0, ep, denom, num, lm, hp)``: ``e_j = exp(a_j - max_j a_j)`` for the positions
    t - d ("m"), t and t + d ("p"), their sum ``denom`` and ``num = sum_j e_j (v_j + rel_j)``, so that
    the output is ``num / denom``. Local steps [lm, n) see a key at t - d and [0, hp) one at t + d; the
    others see the released code's zero padding (logit 0, value = rel_j only).
    """
    t, n = q.shape[1], t1 - t0
    lm = min(max(d - t0, 0), n)
    hp = min(max(t - d - t0, 0), n)
    qw = q[bs, t0:t1] * _LOG2E
    e0 = qw * k[bs, t0:t1]
    em, ep = torch.empty_like(e0), torch.empty_like(e0)
    if lm > 0:
        em[:, :lm].zero_()
    if hp < n:
        ep[:, hp:].zero_()
    if lm < n:
        torch.mul(qw[:, lm:], k[bs, t0 + lm - d : t1 - d], out=em[:, lm:])
    if hp > 0:
        torch.mul(qw[:, :hp], k[bs, t0 + d : t0 + hp + d], out=ep[:, :hp])
    peak = torch.maximum(em, e0)
    torch.maximum(peak, ep, out=peak)
    em.sub_(peak).exp2_()
    e0.sub_(peak).exp2_()
    ep.sub_(peak).exp2_()
    denom = torch.add(em, e0, out=peak).add_(ep)
    num = torch.add(v[bs, t0:t1], rel[1]).mul_(e0)
    num.addcmul_(em, rel[0]).addcmul_(ep, rel[2])
    if lm < n:
        num[:, lm:].addcmul_(em[:, lm:], v[bs, t0 + lm - d : t1 - d])
    if hp > 0:
        num[:, :hp].addcmul_(ep[:, :hp], v[bs, t0 + d : t0 + hp + d])
    return em, e0, ep, denom, num, lm, hp


class _DilatedAttentionFn(torch.autograd.Function):
    """DAL (optionally followed by ReLU) with a hand-written backward, computed window by window.

    Only ``qkv`` and ``rel`` are saved: the backward recomputes the softmax terms of each window in
    cache, which is cheaper than writing three (B, T, C) weight tensors in the forward and reading
    them back. The positions are t - d ("m"), t ("0") and t + d ("p"); outside [0, T) keys and values
    are zero, as with the released code's zero padding.
    """

    @staticmethod
    def forward(ctx, qkv: Tensor, rel: Tensor, d: int, relu: bool) -> Tensor:
        b, t, c3 = qkv.shape
        c = c3 // 3
        q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
        r = rel.to(qkv.dtype)
        out = qkv.new_empty(b, t, c)
        budget = _window_budget(out)

        def run(b0: int, b1: int) -> None:
            for bs, t0, t1 in _windows(b0, b1, t, c, budget):
                *_, denom, num, _, _ = _dal_window(q, k, v, r, d, bs, t0, t1)
                o = torch.div(num, denom, out=out[bs, t0:t1])
                if relu:
                    o.clamp_min_(0)

        _parallel_over_videos(run, b, b * t * c, qkv.device)
        ctx.save_for_backward(qkv, rel)
        ctx.d, ctx.relu = d, relu
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        qkv, rel = ctx.saved_tensors
        d, relu = ctx.d, ctx.relu
        b, t, c3 = qkv.shape
        c = c3 // 3
        q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
        r = rel.to(qkv.dtype)
        budget = _window_budget(grad)
        whole_videos = t * c <= budget  # then every window holds all the rows it writes
        dqkv = torch.empty_like(qkv)
        dq, dk, dv = dqkv[..., :c], dqkv[..., c : 2 * c], dqkv[..., 2 * c :]

        def run(b0: int, b1: int) -> list[Tensor]:
            sums = []
            zeroed = 0  # time windows accumulate into dk, dv: zero rows [zeroed, t1 + d) just before use
            for bs, t0, t1 in _windows(b0, b1, t, c, budget):
                if not whole_videos:
                    zeroed = 0 if t0 == 0 else zeroed
                    rows = max(1, budget // (2 * c))
                    for z in range(zeroed, min(t, t1 + d), rows):
                        dqkv[bs, z : min(t, t1 + d, z + rows), c:].zero_()
                    zeroed = max(zeroed, min(t, t1 + d))
                em, e0, ep, denom, num, lm, hp = _dal_window(q, k, v, r, d, bs, t0, t1)
                n = t1 - t0
                out = num.div_(denom)
                gd = torch.div(grad[bs, t0:t1], denom, out=denom)
                if relu:  # float ops only: ops on bool tensors are many times slower per element here
                    gd.mul_(torch.sign(out).clamp_min_(0))
                # w_j g with w_j = e_j / denom: the gradient of the value seen at position j
                gm, g0, gp = em.mul_(gd), e0.mul_(gd), ep.mul_(gd)
                sums.append(torch.stack([gm.sum((0, 1)), g0.sum((0, 1)), gp.sum((0, 1))]))
                # softmax backward: da_j = w_j g (v_j + rel_j - out)
                da0 = torch.add(v[bs, t0:t1], r[1]).sub_(out).mul_(g0)
                dam = torch.sub(r[0], out)
                dap = torch.sub(r[2], out, out=out)
                if lm < n:
                    dam[:, lm:].add_(v[bs, t0 + lm - d : t1 - d])
                if hp > 0:
                    dap[:, :hp].add_(v[bs, t0 + d : t0 + hp + d])
                dam.mul_(gm)
                dap.mul_(gp)
                qw = q[bs, t0:t1]
                if whole_videos:
                    dv[bs, t0:t1].copy_(g0)
                    torch.mul(da0, qw, out=dk[bs, t0:t1])
                else:
                    dv[bs, t0:t1].add_(g0)
                    dk[bs, t0:t1].addcmul_(da0, qw)
                torch.mul(da0, k[bs, t0:t1], out=dq[bs, t0:t1])
                if lm < n:
                    src = slice(t0 + lm - d, t1 - d)
                    dv[bs, src].add_(gm[:, lm:])
                    dq[bs, t0 + lm : t1].addcmul_(dam[:, lm:], k[bs, src])
                    dk[bs, src].addcmul_(dam[:, lm:], qw[:, lm:])
                if hp > 0:
                    src = slice(t0 + d, t0 + hp + d)
                    dv[bs, src].add_(gp[:, :hp])
                    dq[bs, t0 : t0 + hp].addcmul_(dap[:, :hp], k[bs, src])
                    dk[bs, src].addcmul_(dap[:, :hp], qw[:, :hp])
            return sums

        rel_sums = [s for sums in _parallel_over_videos(run, b, b * t * c, qkv.device) for s in sums]
        grel = torch.stack(rel_sums).sum(0).to(rel.dtype)
        return dqkv, grel, None, None


def dilated_attention_exportable(qkv: Tensor, rel: Tensor, dilation: int, relu: bool = False) -> Tensor:
    """The DAL in plain tensor ops with no Python branch on T, for graphs recorded by an exporter.

    The windowed :class:`_DilatedAttentionFn` runs Python threads and in-place loops over windows,
    which neither ONNX nor TorchScript can record, and :func:`_shift` branches on T, which a trace
    would freeze at the example's length. Here the neighbours at t -/+ d are slices of the sequence
    zero-padded by d on both sides, with bounds that do not depend on T, so the exported graph takes
    any number of steps (the padding is the released code's zero padding).
    """
    q, k, v = qkv.chunk(3, dim=-1)
    d = dilation
    k_pad, v_pad = F.pad(k, (0, 0, d, d)), F.pad(v, (0, 0, d, d))
    keys = (k_pad[:, : -2 * d], k, k_pad[:, 2 * d :])
    values = (v_pad[:, : -2 * d], v, v_pad[:, 2 * d :])
    weights = torch.softmax(torch.stack([q * key for key in keys], dim=0), dim=0)
    out = (
        weights[0] * (values[0] + rel[0])
        + weights[1] * (values[1] + rel[1])
        + weights[2] * (values[2] + rel[2])
    )
    return out.clamp_min(0) if relu else out


def is_exporting() -> bool:
    """True while an exporter records the graph (TorchScript trace, ONNX, ``torch.export``)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.7
    return bool(exporting is not None and exporting())


def dilated_attention(qkv: Tensor, rel: Tensor, dilation: int, relu: bool = False) -> Tensor:
    """PDAN's DAL on projected ``qkv`` (B, T, 3C) with relative terms ``rel`` (3, C) -> (B, T, C);
    ``relu=True`` fuses the ReLU that follows the DAL in a PDAN block. Under an exporter, the same
    function in recordable ops (:func:`dilated_attention_exportable`)."""
    if is_exporting():
        return dilated_attention_exportable(qkv, rel, dilation, relu)
    return _DilatedAttentionFn.apply(qkv, rel, dilation, relu)


_DROPOUT_LEVELS = 1 << 16  # dropout draws 16 random bits per element


def _dropout_threshold(p: float) -> tuple[int, float]:
    """int16 threshold and scale for dropout with drop probability ``p`` from 16 random bits.

    An element is kept iff its uniform int16 draw is below the threshold, i.e. with probability
    ``keep = round((1 - p) 2^16) / 2^16`` (``p`` exact to 2^-16; exactly 0.5 for PDAN's dropout), and
    kept elements are scaled by ``1 / keep``, which keeps the expectation exact.
    """
    levels = round((1.0 - p) * _DROPOUT_LEVELS)
    return levels - _DROPOUT_LEVELS // 2, _DROPOUT_LEVELS / max(levels, 1)


def _dropout_bits(like: Tensor) -> Tensor:
    """Uniform int16 draws shaped like ``like``: four per 64-bit word of the default generator, about
    5x faster on the CPU than ``bernoulli_``, and reproducible under ``torch.manual_seed``."""
    words = torch.empty((like.numel() + 3) // 4, dtype=torch.int64, device=like.device)
    words.random_(-(2**63), 2**63 - 1)
    return words.view(torch.int16)[: like.numel()].view(like.shape)


def _keep_mask(bits: Tensor, threshold: int, dtype: torch.dtype) -> Tensor:
    """1.0 where ``bits < threshold`` else 0.0, as ``clamp(threshold - bits, 0, 1)`` on exact float32
    integers (comparisons producing bool tensors are several times slower per element on the CPU)."""
    return (threshold - bits.to(torch.float32)).clamp_(0, 1).to(dtype)


class _ResidualDropoutFn(torch.autograd.Function):
    """``(x + dropout(y)) * valid`` in one pass per window; saves only the int16 dropout draws."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, valid: Tensor, p: float) -> Tensor:
        threshold, scale = _dropout_threshold(p)
        bits = _dropout_bits(y)
        valid = valid.expand(x.shape[0], x.shape[1], 1)
        out = torch.empty_like(y)
        b, t, c = y.shape
        budget = _window_budget(y)

        def run(b0: int, b1: int) -> None:
            for bs, t0, t1 in _windows(b0, b1, t, c, budget):
                w = (bs, slice(t0, t1))
                torch.addcmul(x[w], y[w], _keep_mask(bits[w], threshold, y.dtype), value=scale, out=out[w])
                out[w].mul_(valid[w])

        _parallel_over_videos(run, b, y.numel(), y.device)
        ctx.save_for_backward(bits, valid)
        ctx.threshold, ctx.scale = threshold, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        bits, valid = ctx.saved_tensors
        threshold, scale = ctx.threshold, ctx.scale
        dx, dy = torch.empty_like(grad), torch.empty_like(grad)
        b, t, c = grad.shape
        budget = _window_budget(grad)

        def run(b0: int, b1: int) -> None:
            for bs, t0, t1 in _windows(b0, b1, t, c, budget):
                w = (bs, slice(t0, t1))
                gv = torch.mul(grad[w], valid[w], out=dx[w])
                torch.mul(gv, _keep_mask(bits[w], threshold, gv.dtype), out=dy[w]).mul_(scale)

        _parallel_over_videos(run, b, grad.numel(), grad.device)
        return dx, dy, None, None


def residual_dropout(x: Tensor, y: Tensor, valid: Tensor, p: float, training: bool) -> Tensor:
    """``(x + dropout(y)) * valid``: the end of a PDAN / MS-TCN block (``valid`` (B, T, 1) 0/1).

    Dropout draws 16 bits per element (see ``_dropout_threshold``: ``p`` is exact to 2^-16) instead of
    ``bernoulli_``, whose cost on the CPU was a tenth of the whole PDAN training step.
    """
    if not training or p == 0.0:
        return (x + y) * valid
    if p >= 1.0:
        return x * valid
    return _ResidualDropoutFn.apply(x, y, valid, p)
