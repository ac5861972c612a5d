"""Vision Transformer encoders and MAE decoders for video (tubelets) and audio (spectrogram patches).

Architecture as in XKD (METHODS.md part A): patch embedding = rearrange + Linear, learnable position
embeddings, a CLS token, pre-norm blocks with MLP 4x and no qkv bias, a final LayerNorm. Attention runs
through ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on GPU); only when asked
does the last block additionally compute the CLS->patch attention weights (one query row, cheap) for
the teachers' feature refinement.

Token layout: video (B, C, T, H, W) -> tokens ordered (t, h, w), each token's pixels ordered
(pt, ph, pw, c); audio (B, 1, F, T) -> tokens ordered (f, t), pixels (pf, pt, c). The same
``patchify_*`` functions produce the reconstruction targets, so encoder input and decoder output
share one layout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from xmkd.models.linear import Linear
from xmkd.models.masking import gather_tokens

Modality = Literal["video", "audio"]

#: LayerNorm eps: PyTorch's default, which the released XKD uses everywhere (xmkd used 1e-6 before;
#: exported encoders whose JSON has no ``norm_eps`` are rebuilt with that, see ``build_encoder``).
DEFAULT_NORM_EPS = 1e-5
#: what an exported encoder JSON without these keys was built with
LEGACY_ENCODER_DEFAULTS = {"norm_eps": 1e-6, "pos_embed_resize": "size"}

#: (width, depth, heads) of the standard ViT sizes.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}


# --------------------------------------------------------------------------- patch helpers


def patchify_video(video: Tensor, tubelet: int, patch: int) -> Tensor:
    """(B, C, T, H, W) -> (B, T/t * H/p * W/p, t*p*p*C).

    Two copies instead of einops' one: channels last first (free when the clip already is), then
    whole ``patch * C`` rows per tubelet row. Moving C innermost in a single strided copy reads
    one float per 4-byte hop across the channel planes; this is ~2x faster on a CPU, same values.
    """
    b, c, t, h, w = video.shape
    if t % tubelet or h % patch or w % patch:
        raise ValueError(f"video {tuple(video.shape[2:])} is not divisible by ({tubelet}, {patch}, {patch})")
    rows = video.permute(0, 2, 3, 4, 1).contiguous()  # (B, T, H, W, C)
    rows = rows.view(b, t // tubelet, tubelet, h // patch, patch, w // patch, patch * c)
    return rows.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, -1, tubelet * patch * patch * c)


def unpatchify_video(
    patches: Tensor, grid: Sequence[int], tubelet: int, patch: int, channels: int = 3
) -> Tensor:
    """Inverse of :func:`patchify_video`; ``grid`` = (T/t, H/p, W/p)."""
    t, h, w = grid
    return rearrange(
        patches,
        "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)",
        t=t,
        h=h,
        w=w,
        pt=tubelet,
        ph=patch,
        pw=patch,
        c=channels,
    )


def patchify_spectrogram(spec: Tensor, patch: Sequence[int] = (4, 16)) -> Tensor:
    """(B, 1, F, T) or (B, F, T) -> (B, F/pf * T/pt, pf*pt*C) with ``patch`` = (pf, pt)."""
    if spec.ndim == 3:
        spec = spec.unsqueeze(1)
    pf, pt = patch
    return rearrange(spec, "b c (f pf) (t pt) -> b (f t) (pf pt c)", pf=pf, pt=pt)


def unpatchify_spectrogram(patches: Tensor, grid: Sequence[int], patch: Sequence[int] = (4, 16)) -> Tensor:
    """Inverse of :func:`patchify_spectrogram` -> (B, 1, F, T); ``grid`` = (F/pf, T/pt)."""
    f, t = grid
    pf, pt = patch
    return rearrange(patches, "b (f t) (pf pt c) -> b c (f pf) (t pt)", f=f, t=t, pf=pf, pt=pt)


def normalized_patch_target(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch normalised pixels (MAE ``norm_pix_loss``): (x - mean) / sqrt(var + eps) per token.

    The variance is the unbiased one, as in MAE, computed from the centred values' norm (ATen's
    ``var`` kernel is ~8x slower on a CPU for these 768-3072 wide rows; same values up to float
    rounding), and the centred copy is divided in place when no gradient flows through it.
    """
    centred = patches - patches.mean(dim=-1, keepdim=True)
    var = torch.linalg.vector_norm(centred, dim=-1, keepdim=True).square() / max(patches.shape[-1] - 1, 1)
    std = (var + eps).sqrt()
    return centred / std if centred.requires_grad else centred.div_(std)


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """MSE averaged over the pixels of each patch, then over masked patches only (``mask`` True)."""
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


PosEmbedResize = Literal["scale_factor", "size"]


def release_pos_embed_scales(old_grid: Sequence[int], new_grid: Sequence[int]) -> tuple[float, ...]:
    """The released XKD's interpolation scale per axis: ``(new + 0.1) / old`` (DINO's trick).

    Video grids get it on every axis; a spectrogram grid's frequency axis, which the release
    requires unchanged, keeps scale 1 (the identity), as the release passes ``scale_factor=(1, ...)``.
    """
    scales = [(n + 0.1) / o for o, n in zip(old_grid, new_grid)]
    if len(old_grid) == 2 and old_grid[0] == new_grid[0]:
        scales[0] = 1.0
    return tuple(scales)


def interpolate_pos_embed(
    pos_embed: Tensor,
    old_grid: Sequence[int],
    new_grid: Sequence[int],
    method: PosEmbedResize = "size",
) -> Tensor:
    """Resize patch position embeddings (..., prod(old_grid), D) to ``new_grid`` (pure function).

    Trilinear for 3-D video grids, bicubic for 2-D spectrogram grids, as when fine-tuning at a
    larger input size (e.g. 112 -> 224). A CLS embedding, if any, must be split off by the caller.
    Interpretation: local views (smaller crops) also use interpolated embeddings, as in DINO.

    ``method``: ``size`` interpolates to ``new_grid`` exactly (sample positions from the ratio of
    the sizes); ``scale_factor`` is the released XKD's ``scale_factor=(n + 0.1) / o``
    (:func:`release_pos_embed_scales`), whose sample positions come from that factor instead (at
    the paper's local-view sizes the embeddings differ by a few hundredths).
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return pos_embed
    squeeze = pos_embed.ndim == 2
    pe = pos_embed.unsqueeze(0) if squeeze else pos_embed
    dim = pe.shape[-1]
    if pe.shape[1] != math.prod(old_grid):
        raise ValueError(
            f"position embedding has {pe.shape[1]} tokens, expected {math.prod(old_grid)} for {old_grid}"
        )
    grid = pe.reshape(pe.shape[0], *old_grid, dim).movedim(-1, 1).float()
    mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[len(old_grid)]
    if method == "size":
        out = F.interpolate(grid, size=new_grid, mode=mode, align_corners=False)
    elif method == "scale_factor":
        scales = release_pos_embed_scales(old_grid, new_grid)
        out = F.interpolate(grid, scale_factor=scales, mode=mode, align_corners=False)
        if tuple(out.shape[2:]) != new_grid:  # floor(o * (n + 0.1) / o) is n unless rounding bites
            raise ValueError(
                f"scale_factor {scales} resized {old_grid} to {tuple(out.shape[2:])}, not {new_grid}"
            )
    else:
        raise ValueError(f"method must be 'size' or 'scale_factor', got {method!r}")
    out = out.movedim(1, -1).reshape(pe.shape[0], math.prod(new_grid), dim).to(pos_embed.dtype)
    return out.squeeze(0) if squeeze else out


# --------------------------------------------------------------------------- transformer


class DropPath(nn.Module):
    """Stochastic depth per sample (drops the residual branch), identity in eval or at p = 0."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class Attention(nn.Module):
    """Multi-head self-attention via SDPA; optionally also the CLS->patch attention weights."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = Linear(dim, dim)

    def forward(self, x: Tensor, return_cls_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, n, c))
        cls_attn = None
        if return_cls_attention:
            # Only the CLS query row: (B, H, 1, N), in float32 for a well-defined softmax under bf16.
            scale = q.shape[-1] ** -0.5
            logits = (q[:, :, :1].float() @ k.float().transpose(-2, -1)) * scale
            cls_attn = logits.softmax(dim=-1)[:, :, 0, 1:]
        return out, cls_attn

    def forward_packed(self, rows: Tensor, segments: Sequence[tuple[int, int]]) -> Tensor:
        """Self-attention within each segment of ``rows``: (R, C) rows of several token batches.

        ``segments``: the (batch, tokens) of each batch, in order, with ``sum(b * n) == R``. The two
        projections run once over all rows (one larger matmul, and one weight gradient instead of a
        gradient per batch summed afterwards); attention stays within each segment's sequences.
        """
        c = rows.shape[-1]
        d = c // self.num_heads
        qkv = self.qkv(rows)
        outs = []
        for chunk, (b, n) in zip(qkv.split([b * n for b, n in segments]), segments):
            q, k, v = chunk.reshape(b, n, 3, self.num_heads, d).permute(2, 0, 3, 1, 4).unbind(0)
            outs.append(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b * n, c))
        return self.proj(torch.cat(outs) if len(outs) > 1 else outs[0])


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_path: float = 0.0,
        norm_eps: float = DEFAULT_NORM_EPS,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(Linear(dim, hidden), nn.GELU(), Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, return_cls_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_cls_attention)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, attn

    def forward_packed(self, rows: Tensor, segments: Sequence[tuple[int, int]]) -> Tensor:
        """:meth:`forward` on the rows of several token batches at once (see
        :meth:`Attention.forward_packed`); stochastic depth is per sample, so it needs ``p = 0`` or
        eval mode (callers fall back to :meth:`forward` per batch otherwise)."""
        if self.drop_path.p and self.training:
            raise ValueError("forward_packed needs drop_path 0 in training (per-sample masks)")
        rows = rows + self.attn.forward_packed(self.norm1(rows), segments)
        return rows + self.mlp(self.norm2(rows))


def make_blocks(
    dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = False,
    drop_path: float = 0.0,
    norm_eps: float = DEFAULT_NORM_EPS,
) -> nn.ModuleList:
    """``depth`` blocks with stochastic-depth rates rising linearly from 0 to ``drop_path``."""
    rates = [drop_path * i / (depth - 1) for i in range(depth)] if depth > 1 else [drop_path]
    return nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias, r, norm_eps) for r in rates)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------- encoder


@dataclass
class EncoderConfig:
    """Everything needed to rebuild an encoder (saved as JSON next to exported weights).

    ``input_size``: video (frames, height, width); audio (mel_bins, frames). ``patch_size``: video
    (tubelet, patch, patch); audio (patch_freq, patch_time). ``norm_eps``: every LayerNorm's eps
    (the release's 1e-5). ``pos_embed_resize``: how inputs of another size (local views,
    fine-tuning at 224) resize the position embeddings (:func:`interpolate_pos_embed`).
    """

    modality: Modality = "video"
    input_size: tuple[int, ...] = (32, 112, 112)
    patch_size: tuple[int, ...] = (4, 16, 16)
    in_chans: int = 3
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    drop_path: float = 0.0
    norm_eps: float = DEFAULT_NORM_EPS
    pos_embed_resize: PosEmbedResize = "scale_factor"

    def __post_init__(self) -> None:
        if self.pos_embed_resize not in ("scale_factor", "size"):
            raise ValueError(
                f"pos_embed_resize must be 'scale_factor' or 'size', got {self.pos_embed_resize!r}"
            )
        self.input_size = tuple(self.input_size)
        self.patch_size = tuple(self.patch_size)
        if len(self.input_size) != len(self.patch_size):
            raise ValueError(f"input_size {self.input_size} and patch_size {self.patch_size} differ in rank")
        for s, p in zip(self.input_size, self.patch_size):
            if s % p:
                raise ValueError(
                    f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}"
                )

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(s // p for s, p in zip(self.input_size, self.patch_size))

    @property
    def num_patches(self) -> int:
        return math.prod(self.grid)

    @property
    def patch_dim(self) -> int:
        return math.prod(self.patch_size) * self.in_chans

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"], d["patch_size"] = list(self.input_size), list(self.patch_size)
        return d


def _sized(size: str, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` with the named size's width, depth and heads wherever ``kw`` does not set them."""
    dim, depth, heads = VIT_SIZES[size]
    return {"dim": dim, "depth": depth, "num_heads": heads, **kw}


def video_encoder_config(
    size: str = "base", num_frames: int = 32, img_size: int = 112, tubelet: int = 4, patch: int = 16, **kw
) -> EncoderConfig:
    """A video ViT of a named size; ``kw`` overrides any field (``in_chans=2`` for flow, ``dim``...)."""
    kw.setdefault("in_chans", 3)
    return EncoderConfig(
        "video", (num_frames, img_size, img_size), (tubelet, patch, patch), **_sized(size, kw)
    )


def audio_encoder_config(
    size: str = "base", mel_bins: int = 80, frames: int = 448, patch: Sequence[int] = (4, 16), **kw
) -> EncoderConfig:
    """A log-mel spectrogram ViT of a named size; ``kw`` overrides any field."""
    return EncoderConfig("audio", (mel_bins, frames), tuple(patch), 1, **_sized(size, kw))


@dataclass(frozen=True)
class PackedInput:
    """One input of :meth:`ViTEncoder.forward_many`: the arguments of :meth:`ViTEncoder.forward`."""

    x: Tensor
    keep_indices: Tensor | None = None
    patches: Tensor | None = None


class ViTEncoder(nn.Module):
    """ViT over video tubelets or spectrogram patches.

    ``blocks`` may be passed in to share the transformer between modalities (XKD-MAS/MATS); the
    tokeniser, position embeddings, CLS token and final norm always stay per encoder.
    """

    def __init__(self, config: EncoderConfig, blocks: nn.ModuleList | None = None) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = Linear(config.patch_dim, config.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.num_patches, config.dim))
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if blocks is None:
            blocks = make_blocks(
                config.dim,
                config.depth,
                config.num_heads,
                config.mlp_ratio,
                config.qkv_bias,
                config.drop_path,
                config.norm_eps,
            )
            blocks.apply(_init_weights)
        elif len(blocks) != config.depth or blocks[0].attn.num_heads != config.num_heads:
            raise ValueError("shared blocks do not match the encoder config")
        self.blocks = blocks
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    def grid_of(self, x: Tensor) -> tuple[int, ...]:
        spatial = x.shape[2:] if self.config.modality == "video" else x.shape[-2:]
        for s, p in zip(spatial, self.config.patch_size):
            if s % p:
                raise ValueError(
                    f"{self.config.modality} input of size {tuple(spatial)} is not divisible by "
                    f"patch size {self.config.patch_size}"
                )
        return tuple(s // p for s, p in zip(spatial, self.config.patch_size))

    def patchify(self, x: Tensor) -> Tensor:
        if self.config.modality == "video":
            return patchify_video(x, self.config.patch_size[0], self.config.patch_size[1])
        return patchify_spectrogram(x, self.config.patch_size)

    def tokens(self, x: Tensor, keep_indices: Tensor | None = None, patches: Tensor | None = None) -> Tensor:
        """Patch tokens + position embeddings, the visible subset if ``keep_indices``, CLS first.

        ``patches``: ``self.patchify(x)`` when the caller already has it (the MAE target needs it
        too), so the clip is not rearranged twice.
        """
        grid = self.grid_of(x)
        patches = self.patchify(x) if patches is None else patches
        pos = interpolate_pos_embed(
            self.pos_embed[:, 1:], self.config.grid, grid, self.config.pos_embed_resize
        )
        if keep_indices is not None:
            # Embed only the visible patches: with 85% masking the embedding of the masked ones
            # (forward and weight gradient) is ~1% of a ViT-B step, all of it thrown away.
            patches = gather_tokens(patches, keep_indices)
            pos = gather_tokens(pos.expand(x.shape[0], -1, -1), keep_indices)
        tok = self.patch_embed(patches) + pos
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tok.shape[0], -1, -1)
        return torch.cat([cls, tok], dim=1)

    def forward_with_attention(
        self,
        x: Tensor,
        keep_indices: Tensor | None = None,
        return_attention: bool = True,
        patches: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Final-normed tokens (B, 1 + K, D) and the last block's CLS->patch attention (B, H, K)."""
        h = self.tokens(x, keep_indices, patches)
        last = len(self.blocks) - 1
        attn = None
        for i, blk in enumerate(self.blocks):
            h, a = blk(h, return_cls_attention=return_attention and i == last)
            if a is not None:
                attn = a
        return self.norm(h), attn

    def forward(self, x: Tensor, keep_indices: Tensor | None = None, patches: Tensor | None = None) -> Tensor:
        """Final-normed tokens (B, 1 + K, D), CLS first (``patches``: see :meth:`tokens`)."""
        return self.forward_with_attention(x, keep_indices, return_attention=False, patches=patches)[0]

    def forward_many(self, inputs: Sequence[PackedInput]) -> list[Tensor]:
        """:meth:`forward` of several inputs (e.g. the masked global view and the local views) in one
        pass: the same values up to float reordering, each (B_i, 1 + K_i, D).

        Every row-wise layer (norms, projections, MLP) runs once over the rows of all inputs, so
        each weight sees one larger matmul and one gradient; attention stays within each input's
        sequences. With stochastic depth in training each input runs through :meth:`forward`.
        """
        if self.training and any(blk.drop_path.p for blk in self.blocks):
            return [self(i.x, i.keep_indices, i.patches) for i in inputs]
        tokens = [self.tokens(i.x, i.keep_indices, i.patches) for i in inputs]
        segments = [(t.shape[0], t.shape[1]) for t in tokens]
        rows = torch.cat([t.reshape(-1, t.shape[-1]) for t in tokens]) if len(tokens) > 1 else tokens[0]
        rows = rows.reshape(-1, tokens[0].shape[-1])
        for blk in self.blocks:
            rows = blk.forward_packed(rows, segments)
        rows = self.norm(rows)
        return [r.reshape(b, n, -1) for r, (b, n) in zip(rows.split([b * n for b, n in segments]), segments)]

    def patch_mean(self, x: Tensor) -> Tensor:
        """Clip feature for evaluation: the mean of the patch tokens after the final norm (B, D)."""
        return self(x)[:, 1:].mean(dim=1)


def build_encoder(config: EncoderConfig | dict, blocks: nn.ModuleList | None = None) -> ViTEncoder:
    """An encoder from a config, or from a config dict (an exported JSON).

    A dict without ``norm_eps`` / ``pos_embed_resize`` was exported before these knobs existed, by
    an encoder trained with ``LEGACY_ENCODER_DEFAULTS``: it is rebuilt as it was trained.
    """
    if isinstance(config, dict):
        config = EncoderConfig(**{**LEGACY_ENCODER_DEFAULTS, **config})
    return ViTEncoder(config, blocks)


def save_exported_encoder(encoder: ViTEncoder, path: str | Path) -> Path:
    """Write ``path`` (a plain state_dict) and ``path`` with suffix .json (the architecture)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    torch.save(state, path)
    path.with_suffix(".json").write_text(json.dumps(encoder.config.to_dict(), indent=2))
    return path


def load_exported_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> ViTEncoder:
    """Rebuild an encoder written by :func:`save_exported_encoder` (weights_only load)."""
    path = Path(path)
    meta = path.with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exported encoder weights not found")
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: architecture JSON for {path.name} not found")
    encoder = build_encoder(json.loads(meta.read_text()))
    state = torch.load(path, map_location=map_location, weights_only=True)
    encoder.load_state_dict(state)
    return encoder


# --------------------------------------------------------------------------- decoder


class MAEDecoder(nn.Module):
    """MAE decoder: Linear enc->dim, mask tokens, ``depth`` blocks, Linear -> patch pixels.

    Runs on the global view's full token grid (``num_patches``) with its own learnable position
    embeddings; returns predictions for every patch (B, N, patch_dim), CLS dropped.

    The released XKD's decoder (``base_decoder``: 384 wide, 4 blocks, 12 heads) has no LayerNorm
    between its last block and the prediction layer; ``final_norm=True`` adds one (MAE's layout,
    and what xmkd checkpoints made before this knob hold as ``norm.*``).
    """

    def __init__(
        self,
        num_patches: int,
        encoder_dim: int,
        patch_dim: int,
        dim: int = 384,
        depth: int = 4,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        final_norm: bool = False,
        norm_eps: float = DEFAULT_NORM_EPS,
    ) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.embed = Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, dim))
        self.blocks = make_blocks(dim, depth, num_heads, mlp_ratio, norm_eps=norm_eps)
        # Identity keeps the state_dict free of norm.* keys (a checkpoint of either layout fails
        # loudly on the other instead of silently keeping a fresh norm).
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if final_norm else nn.Identity()
        self.pred = Linear(dim, patch_dim)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, tokens: Tensor, restore_indices: Tensor) -> Tensor:
        """``tokens`` (B, 1 + K, D_enc) from the encoder (CLS first); ``restore_indices`` (B, N)."""
        x = self.embed(tokens)
        b, k1, d = x.shape
        n = restore_indices.shape[1]
        if n != self.num_patches:
            raise ValueError(f"decoder built for {self.num_patches} patches, mask has {n}")
        fill = self.mask_token.expand(b, n + 1 - k1, d)
        patches = torch.cat([x[:, 1:], fill], dim=1)
        patches = gather_tokens(patches, restore_indices)
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed
        for blk in self.blocks:
            x, _ = blk(x)
        # CLS dropped before the (row-wise) norm and projection: the same rows come out, and the
        # backward has no zero-filled (B, 1 + N, patch_dim) slice gradient to write.
        return self.pred(self.norm(x[:, 1:]))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (unique) parameters; shared tensors count once."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
