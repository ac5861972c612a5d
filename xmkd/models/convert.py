"""Load the authors' released weights into xmkd: XKD encoders and PDAN / MS-TCN heads.

XKD (pritamqu/XKD, ``codes/train``). ``XKD_Net.save_state_dicts`` writes four files,
``{vid,aud}_{student,teacher}.pth.tar``, each the state_dict of one ``VideoViT`` / ``AudioViT``
backbone; ``save_checkpoint`` writes ``checkpoint.pth.tar`` = ``{"model": XKD_Net.state_dict(),
"optimizer", "epoch"[, "amp"]}`` with a ``module.`` prefix under DDP. A backbone's names, onto
:class:`~xmkd.models.vit.ViTEncoder`'s:

- ``cuboid_embed.proj`` (video) / ``patch_embed.proj`` (audio) -> ``patch_embed``; the same
  pixel order, (pt ph pw c) / (pf pt c), as xmkd's ``patchify_*``;
- ``cls_token`` -> ``cls_token``; ``enc_pos_embed`` -> ``pos_embed`` (tokens ordered (t h w) / (f t));
- ``encoder.blocks.{i}.{norm1, attn.qkv, attn.proj, norm2}`` -> ``blocks.{i}.<same>`` (qkv rows
  [q; k; v], heads inner, as xmkd's attention reads them); ``mlp.fc1`` / ``mlp.fc2`` -> ``mlp.0`` /
  ``mlp.2``;
- ``encoder_norm`` -> ``norm``.

In a training checkpoint the encoders are ``{vid,aud}_{student,teacher}.backbone.*``;
``{vid,aud}_ae.encoder.*`` is the student backbone again (one module under two names, checked
equal). The projector heads (``*.head.*``), the MAE decoders (the rest of ``*_ae.*``) and the DINO
centres (``*_ce_loss.center``) are not encoder weights and are left out (``XKD_NOT_ENCODER``). The
modality-agnostic variants (XKD-MAS / MATS) share blocks between modalities under the same names;
each converted encoder then holds its own copy.

PDAN (dairui01/PDAN ``PDAN.py``; MS-TCN's ``model.py`` has the same layout). The training script
wraps the model in ``nn.DataParallel`` (``module.`` prefix); stage 0 is ``stage1.*``, stage s > 0
``stages.{s-1}.*``; the 1x1 ``Conv1d`` weights (out, in, 1) become ``Linear`` weights (out, in):
``conv_1x1`` -> ``inp``, ``layers.{i}.conv_attention.{query,key,value}_conv`` -> ``blocks.{i}.
attention.qkv`` (rows [q; k; v]), ``rel_t`` (C, 1, 3) -> ``rel`` (3, C) (positions t-d, t, t+d),
``layers.{i}.conv_1x1`` -> ``blocks.{i}.proj``, ``conv_out`` -> ``out``; MS-TCN's
``layers.{i}.conv_dilated`` -> ``blocks.{i}.conv`` (same layout).

Every conversion is strict: a release key that maps nowhere, an xmkd parameter that nothing fills,
or a shape that does not fit raises :class:`ReleaseWeightsError` listing all of them. Files are read
with ``torch.load(..., weights_only=True)`` (no code runs while loading).

The converted encoders are built with the release's LayerNorm eps (PyTorch's default 1e-5) and its
position-embedding resize (``scale_factor=(n + 0.1) / o``), xmkd's defaults. Not equal by
construction (see README, Fidelity): the release's PDAN leaks the input projection's bias into
padded steps (xmkd masks it, ``xmkd.models.temporal``).

Examples:
    >>> from xmkd.models.convert import export_release_encoders
    >>> export_release_encoders("xkd_release/", "encoders/")  # doctest: +SKIP
    >>> # encoders/{student,teacher}_{video,audio}.pt(+.json): load_exported_encoder, xmkd extract

Command line: ``python -m xmkd.models.convert --release PATH --out DIR [--kind xkd|pdan|mstcn]``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from xmkd.errors import XmkdError
from xmkd.models.temporal import HeadKind, TemporalDetectionHead, build_head
from xmkd.models.vit import EncoderConfig, ViTEncoder, build_encoder, save_exported_encoder

__all__ = [
    "RELEASE_XKD_ROLES",
    "XKD_NOT_ENCODER",
    "ReleaseWeightsError",
    "build_release_encoders",
    "convert_pdan_release_state_dict",
    "convert_xkd_release_backbone",
    "convert_xkd_release_state_dict",
    "export_pdan_release_head",
    "export_release_encoders",
    "load_pdan_release_head",
    "load_release_state_dict",
    "pdan_release_head_config",
    "release_encoder_config",
]

#: release module name -> xmkd export name (``XKDPretrainer.export_encoders``)
RELEASE_XKD_ROLES: dict[str, str] = {
    "vid_student": "student_video",
    "vid_teacher": "teacher_video",
    "aud_student": "student_audio",
    "aud_teacher": "teacher_audio",
}
#: keys of a release training checkpoint that are not encoder weights (left out on purpose)
XKD_NOT_ENCODER = re.compile(
    r"^(?:(?:vid|aud)_(?:student|teacher)\.head\."  # DINO projector heads
    r"|(?:vid|aud)_ae\.(?!encoder\.)"  # MAE decoders, mask tokens, decoder position embeddings
    r"|(?:vt2as|at2vs)_ce_loss\.|align_loss\.)"  # DINO centres, the MMD loss
)
#: encoder size (width -> heads) of the release's ``encoder_dict``; heads are not in the weights
RELEASE_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16}
#: the release's LayerNorms are ``nn.LayerNorm`` with PyTorch's default eps
RELEASE_NORM_EPS = 1e-5
#: the release's pretraining input (``configs/pretext/kinetics400/xkd.yaml``)
RELEASE_INPUT = {"video": ((32, 112, 112), (4, 16, 16)), "audio": ((80, 448), (4, 16))}


class ReleaseWeightsError(XmkdError, ValueError):
    """Release weights that do not map onto xmkd; the message lists every offending key."""

    def __init__(
        self,
        what: str,
        unmapped: Iterable[str] = (),
        missing: Iterable[str] = (),
        mismatched: Iterable[str] = (),
        hint: str = "",
    ) -> None:
        self.unmapped, self.missing, self.mismatched = sorted(unmapped), sorted(missing), sorted(mismatched)
        parts = [f"{what}: the release weights do not map onto xmkd"]
        for label, keys in (
            ("unmapped release keys", self.unmapped),
            ("missing (nothing fills these xmkd keys)", self.missing),
            ("shape mismatches", self.mismatched),
        ):
            if keys:
                parts.append(f"{label} ({len(keys)}): " + ", ".join(keys))
        if hint:
            parts.append(hint)
        super().__init__("\n  ".join(parts))


# ------------------------------------------------------------------------------------------ files


def load_release_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A release file as a flat state_dict: ``torch.load(weights_only=True)`` on the CPU, the
    ``"model"`` / ``"state_dict"`` entry of a training checkpoint, ``module.`` prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: release weights not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ReleaseWeightsError(
            str(path),
            hint=(
                "the file is not a plain state_dict (weights_only loading refused it: "
                f"{str(e).splitlines()[0]}). Some releases pickle the whole model (e.g. the TSU "
                "PDAN_TSU_RGB: torch.save(model)); convert it once, in the release's environment and "
                "only if you trust the file: torch.save(torch.load(path, weights_only=False)"
                ".state_dict(), 'state_dict.pt')"
            ),
        ) from e
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: object, what: str = "release weights") -> dict[str, Tensor]:
    """The tensors of a state_dict, a ``{"model": ...}`` / ``{"state_dict": ...}`` checkpoint, with
    ``module.`` (DataParallel / DDP) prefixes removed."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ReleaseWeightsError(what, hint=f"expected a state_dict (a mapping of tensors), got {type(obj)}")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise ReleaseWeightsError(what, unmapped=[str(key)], hint="entries that are not tensors")
        out[key[len("module.") :] if key.startswith("module.") else key] = value
    return out


# ------------------------------------------------------------------------------------------- XKD


def _release_modality(state: Mapping[str, Tensor]) -> str:
    if "cuboid_embed.proj.weight" in state:
        return "video"
    if "patch_embed.proj.weight" in state:
        return "audio"
    raise ReleaseWeightsError(
        "XKD backbone",
        missing=["cuboid_embed.proj.weight (video) or patch_embed.proj.weight (audio)"],
        hint=f"not a release VideoViT / AudioViT state_dict; its first keys: {sorted(state)[:5]}",
    )


def _map_backbone_key(key: str, tokenizer: str) -> str | None:
    if key in (f"{tokenizer}.proj.weight", f"{tokenizer}.proj.bias"):
        return "patch_embed." + key.rsplit(".", 1)[1]
    if key == "cls_token":
        return key
    if key == "enc_pos_embed":
        return "pos_embed"
    if key.startswith("encoder_norm."):
        return "norm." + key[len("encoder_norm.") :]
    m = re.fullmatch(
        r"encoder\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)", key
    )
    if m is None:
        return None
    part = {"mlp.fc1": "mlp.0", "mlp.fc2": "mlp.2"}.get(m[2], m[2])
    return f"blocks.{m[1]}.{part}.{m[3]}"


def _map_backbone(state: Mapping[str, Tensor], modality: str) -> tuple[dict[str, Tensor], list[str]]:
    tokenizer = "cuboid_embed" if modality == "video" else "patch_embed"
    out, unmapped = {}, []
    for key, value in state.items():
        new = _map_backbone_key(key, tokenizer)
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value.detach().clone()
    return out, unmapped


def convert_xkd_release_backbone(
    state: Mapping[str, Tensor], modality: str | None = None, *, what: str = "XKD backbone"
) -> dict[str, Tensor]:
    """A release ``VideoViT`` / ``AudioViT`` state_dict -> xmkd ``ViTEncoder`` names (strict about
    release keys; :func:`release_encoder_config` checks the xmkd side)."""
    found = _release_modality(state)
    if modality is not None and modality != found:
        raise ReleaseWeightsError(what, hint=f"expected a {modality} backbone, found a {found} one")
    out, unmapped = _map_backbone(state, found)
    if unmapped:
        head = any(k.startswith("head.") for k in unmapped)
        raise ReleaseWeightsError(
            what,
            unmapped=unmapped,
            hint="a classifier head ('head.*') is not an encoder weight" if head else "",
        )
    return out


def release_encoder_config(
    state: Mapping[str, Tensor],
    modality: str,
    *,
    num_heads: int | None = None,
    input_size: Sequence[int] | None = None,
    patch_size: Sequence[int] | None = None,
    what: str = "XKD encoder",
) -> EncoderConfig:
    """The :class:`EncoderConfig` of a converted (xmkd-named) encoder state_dict.

    Width, depth, MLP ratio and qkv bias are read from the tensors. Heads are not in the weights:
    by default the release's ``encoder_dict`` head count for the width (ViT-B: 12). ``input_size``
    and ``patch_size`` default to the release's pretraining input (video 32x112x112 with 4x16x16
    tubelets, audio 80x448 with 4x16 patches) and must agree with the patch embedding and the
    position embeddings; then every tensor's name and shape is checked against the encoder that
    :func:`~xmkd.models.vit.build_encoder` makes of the config.
    """
    if "cls_token" not in state or "patch_embed.weight" not in state:
        raise ReleaseWeightsError(
            what, missing=[k for k in ("cls_token", "patch_embed.weight") if k not in state]
        )
    dim = int(state["cls_token"].shape[-1])
    depth = len({int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if num_heads is None:
        if dim not in RELEASE_HEADS:
            raise ReleaseWeightsError(what, hint=f"width {dim} is not a release size; pass num_heads")
        num_heads = RELEASE_HEADS[dim]
    default_input, default_patch = RELEASE_INPUT[modality]
    input_size = tuple(input_size or default_input)
    patch_size = tuple(patch_size or default_patch)
    fc1 = state.get("blocks.0.mlp.0.weight")
    config = EncoderConfig(
        modality=modality,  # type: ignore[arg-type]
        input_size=input_size,
        patch_size=patch_size,
        in_chans=3 if modality == "video" else 1,
        dim=dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=float(fc1.shape[0]) / dim if fc1 is not None else 4.0,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        norm_eps=RELEASE_NORM_EPS,
        pos_embed_resize="scale_factor",
    )
    check_state_dict(state, _expected_shapes(config), what, hint=(
        f"built for {modality} input {input_size} with patches {patch_size} "
        f"({config.num_patches} patches of {config.patch_dim} values); pass input_size / patch_size "
        "if the release run used others"
    ))  # fmt: skip
    return config


def _expected_shapes(config: EncoderConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation cost
        encoder = build_encoder(config)
    return {k: tuple(v.shape) for k, v in encoder.state_dict().items()}


def check_state_dict(
    state: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], what: str, hint: str = ""
) -> None:
    """Raise :class:`ReleaseWeightsError` unless ``state`` has exactly the ``expected`` names and shapes."""
    unmapped = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {tuple(shape)}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != tuple(shape)
    ]
    if unmapped or missing or mismatched:
        raise ReleaseWeightsError(what, unmapped, missing, mismatched, hint)


def convert_xkd_release_state_dict(state: Mapping[str, Tensor] | object) -> dict[str, dict[str, Tensor]]:
    """A release XKD training checkpoint (or ``XKD_Net.state_dict()``) -> xmkd encoder state_dicts
    ``{"student_video", "teacher_video", "student_audio", "teacher_audio"}``.

    Strict: every key is an encoder weight, a copy of the student backbone (``*_ae.encoder.*``,
    checked equal), or one of ``XKD_NOT_ENCODER``; anything else, and a missing encoder, is listed in
    a :class:`ReleaseWeightsError`. A single backbone file goes through
    :func:`convert_xkd_release_backbone` instead.
    """
    flat = unwrap_state_dict(state, "XKD checkpoint")
    parts: dict[str, dict[str, Tensor]] = {role: {} for role in RELEASE_XKD_ROLES}
    copies: dict[str, dict[str, Tensor]] = {"vid": {}, "aud": {}}
    unmapped = []
    for key, value in flat.items():
        m = re.match(r"((?:vid|aud)_(?:student|teacher))\.backbone\.(.+)", key)
        if m:
            parts[m[1]][m[2]] = value
        elif m := re.match(r"(vid|aud)_ae\.encoder\.(.+)", key):
            copies[m[1]][m[2]] = value
        elif not XKD_NOT_ENCODER.match(key):
            unmapped.append(key)
    missing = [f"{role}.backbone.*" for role, part in parts.items() if not part]
    out = {}
    for role, part in parts.items():
        if part:
            modality = "video" if role.startswith("vid") else "audio"
            out[RELEASE_XKD_ROLES[role]], bad = _map_backbone(part, modality)
            unmapped += [f"{role}.backbone.{k}" for k in bad]
    if unmapped or missing:
        raise ReleaseWeightsError("XKD checkpoint", unmapped=unmapped, missing=missing)
    for prefix, copy in copies.items():
        student = parts[f"{prefix}_student"]
        differ = [k for k, v in copy.items() if k not in student or not torch.equal(student[k], v)]
        if differ:
            raise ReleaseWeightsError(
                "XKD checkpoint",
                mismatched=[f"{prefix}_ae.encoder.{k}" for k in differ],
                hint=f"{prefix}_ae.encoder should be the student backbone {prefix}_student.backbone",
            )
    return out


def _collect_xkd_sources(source: str | Path) -> dict[str, dict[str, Tensor]]:
    """xmkd-named state_dicts from a training checkpoint, one backbone file (its role from its name,
    e.g. ``vid_teacher.pth.tar``), or a directory holding the release's backbone files."""
    source = Path(source)
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    out: dict[str, dict[str, Tensor]] = {}
    for path in files:
        role = next((r for r in RELEASE_XKD_ROLES if path.name.startswith(r)), None)
        if source.is_dir() and role is None and path.name != "checkpoint.pth.tar":
            continue
        state = load_release_state_dict(path)
        if any(k.endswith(".backbone.cls_token") for k in state):
            out.update(convert_xkd_release_state_dict(state))
        elif role is not None:
            modality = "video" if role.startswith("vid") else "audio"
            out[RELEASE_XKD_ROLES[role]] = convert_xkd_release_backbone(state, modality, what=str(path))
        else:
            raise ReleaseWeightsError(
                str(path),
                hint="neither a training checkpoint nor a backbone file named {vid,aud}_{student,teacher}*",
            )
    if not out:
        raise ReleaseWeightsError(str(source), hint="no release XKD weights found there")
    return out


def build_release_encoders(
    source: str | Path | Mapping[str, Mapping[str, Tensor]],
    *,
    num_heads: int | None = None,
    input_sizes: Mapping[str, Sequence[int]] | None = None,
    patch_sizes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, ViTEncoder]:
    """xmkd encoders (eval mode) holding the release's weights, keyed like ``export_encoders``.

    ``source``: a path (see :func:`export_release_encoders`) or converted state_dicts.
    ``input_sizes`` / ``patch_sizes``: per modality, when the release run differs from its paper
    recipe (see :func:`release_encoder_config`).
    """
    states = _collect_xkd_sources(source) if isinstance(source, (str, Path)) else dict(source)
    encoders = {}
    for name, state in states.items():
        modality = name.rsplit("_", 1)[1]
        config = release_encoder_config(
            state, modality, num_heads=num_heads,
            input_size=(input_sizes or {}).get(modality), patch_size=(patch_sizes or {}).get(modality),
            what=name,
        )  # fmt: skip
        encoder = build_encoder(config)
        encoder.load_state_dict(state, strict=True)
        encoders[name] = encoder.eval()
    return encoders


def export_release_encoders(source: str | Path, out_dir: str | Path, **kwargs) -> dict[str, Path]:
    """Write the release's encoders in ``XKDPretrainer.export_encoders``'s format.

    ``source``: the release's ``checkpoint.pth.tar``, one ``{vid,aud}_{student,teacher}*.pth.tar``
    backbone file, or a directory holding those files. Writes ``{student,teacher}_{video,audio}.pt``
    (+ ``.json``) for what it found and an ``encoders.json`` index (``"method": "xkd-release"``);
    ``kwargs`` go to :func:`build_release_encoders`.
    """
    out_dir = Path(out_dir)
    encoders = build_release_encoders(source, **kwargs)
    paths = {name: save_exported_encoder(enc, out_dir / f"{name}.pt") for name, enc in encoders.items()}
    index = {
        "method": "xkd-release",
        "source": str(source),
        "files": {k: p.name for k, p in paths.items()},
    }
    (out_dir / "encoders.json").write_text(json.dumps(index, indent=2))
    return paths


# ------------------------------------------------------------------------------------ PDAN/MS-TCN


def _release_stage_prefixes(state: Mapping[str, Tensor]) -> list[str]:
    later = sorted({int(m[1]) for k in state if (m := re.match(r"stages\.(\d+)\.", k))})
    if later != list(range(len(later))):
        raise ReleaseWeightsError(
            "PDAN", missing=[f"stages.{i}.*" for i in range(max(later) + 1) if i not in later]
        )
    return ["stage1."] + [f"stages.{i}." for i in later]


def pdan_release_head_config(state: Mapping[str, Tensor] | object, kind: HeadKind = "pdan") -> dict:
    """``build_head`` keyword arguments of a release PDAN / MS-TCN state_dict (read from its shapes)."""
    flat = unwrap_state_dict(state, "PDAN")
    if "stage1.conv_1x1.weight" not in flat or "stage1.conv_out.weight" not in flat:
        raise ReleaseWeightsError(
            "PDAN", missing=[k for k in ("stage1.conv_1x1.weight", "stage1.conv_out.weight") if k not in flat]
        )
    channels, in_dim = flat["stage1.conv_1x1.weight"].shape[:2]
    num_blocks = len({int(m[1]) for k in flat if (m := re.match(r"stage1\.layers\.(\d+)\.", k))})
    return {
        "kind": kind,
        "in_dim": int(in_dim),
        "num_classes": int(flat["stage1.conv_out.weight"].shape[0]),
        "channels": int(channels),
        "num_blocks": num_blocks,
        "num_stages": len(_release_stage_prefixes(flat)),
    }


def convert_pdan_release_state_dict(
    state: Mapping[str, Tensor] | object, kind: HeadKind = "pdan"
) -> dict[str, Tensor]:
    """A release PDAN (``kind="pdan"``) or MS-TCN (``"mstcn"``) state_dict -> the state_dict of
    ``build_head(**pdan_release_head_config(state, kind))`` (strict both ways)."""
    flat = unwrap_state_dict(state, "PDAN")
    config = pdan_release_head_config(flat, kind)
    out: dict[str, Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> Tensor | None:
        if key not in flat:
            return None
        used.add(key)
        return flat[key].detach().clone()

    def linear(src: str, dst: str) -> None:  # 1x1 Conv1d (out, in, 1) -> Linear (out, in)
        w, b = take(src + ".weight"), take(src + ".bias")
        if w is not None:
            out[dst + ".weight"] = w.squeeze(-1) if w.dim() == 3 and w.shape[-1] == 1 else w
        if b is not None:
            out[dst + ".bias"] = b

    for s, pre in enumerate(_release_stage_prefixes(flat)):
        linear(pre + "conv_1x1", f"stages.{s}.inp")
        linear(pre + "conv_out", f"stages.{s}.out")
        for i in range(config["num_blocks"]):
            src, dst = f"{pre}layers.{i}.", f"stages.{s}.blocks.{i}."
            linear(src + "conv_1x1", dst + "proj")
            if kind == "pdan":
                dal = src + "conv_attention."
                qkv = [take(dal + f"{n}_conv.weight") for n in ("query", "key", "value")]
                if all(w is not None for w in qkv):
                    out[dst + "attention.qkv.weight"] = torch.cat([w.squeeze(-1) for w in qkv], 0)
                rel = take(dal + "rel_t")
                if rel is not None:
                    out[dst + "attention.rel"] = rel[:, 0, :].t().contiguous()  # (C, 1, 3) -> (3, C)
            else:
                for part in ("weight", "bias"):
                    w = take(src + f"conv_dilated.{part}")
                    if w is not None:
                        out[dst + f"conv.{part}"] = w
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_head(**config).state_dict().items()}
    unmapped = [k for k in flat if k not in used]
    if unmapped:
        raise ReleaseWeightsError(
            f"{kind} head", unmapped=unmapped, hint="(PDAN's q/k/v convolutions have no bias)"
        )
    check_state_dict(out, expected, f"{kind} head")
    return out


def load_pdan_release_head(
    source: str | Path | Mapping[str, Tensor], kind: HeadKind = "pdan", dropout: float = 0.5
) -> TemporalDetectionHead:
    """A :class:`TemporalDetectionHead` (eval mode) with a release PDAN / MS-TCN's weights; later
    stages read what the release feeds them (``stage_activation="release"``)."""
    state = load_release_state_dict(source) if isinstance(source, (str, Path)) else source
    config = pdan_release_head_config(state, kind)
    head = build_head(**config, dropout=dropout, stage_activation="release")
    head.load_state_dict(convert_pdan_release_state_dict(state, kind), strict=True)
    return head.eval()


def export_pdan_release_head(source: str | Path, out_dir: str | Path, kind: HeadKind = "pdan") -> Path:
    """Write ``<out_dir>/<kind>_head.pt`` (xmkd state_dict of the head) and ``.json`` (``build_head``
    arguments). Load it into a detector with ``SingleStreamDetector(input_dim=..., head=kind, ...)
    .head.load_state_dict(torch.load(path, weights_only=True))``."""
    state = load_release_state_dict(source)
    config = pdan_release_head_config(state, kind)
    converted = convert_pdan_release_state_dict(state, kind)
    path = Path(out_dir) / f"{kind}_head.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(converted, path)
    path.with_suffix(".json").write_text(json.dumps({**config, "source": str(source)}, indent=2))
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m xmkd.models.convert", description="Convert released XKD / PDAN weights to xmkd."
    )
    parser.add_argument("--release", required=True, help="release checkpoint, backbone file or directory")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--kind", choices=["xkd", "pdan", "mstcn"], default="xkd")
    parser.add_argument(
        "--num-heads", type=int, default=None, help="XKD: attention heads (default: by width)"
    )
    args = parser.parse_args(argv)
    if args.kind == "xkd":
        paths = export_release_encoders(args.release, args.out, num_heads=args.num_heads)
        for name, path in paths.items():
            print(f"{name}: {path}")
    else:
        print(export_pdan_release_head(args.release, args.out, args.kind))


if __name__ == "__main__":
    main()
