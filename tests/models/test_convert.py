"""The release converters: state_dicts built here in the releases' naming at tiny size (the names
written from reading pritamqu/XKD and dairui01/PDAN, not by importing them) land in xmkd tensor for
tensor, and the converted models compute what transcriptions of the releases' forward passes
compute from the same tensors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from xmkd.models.convert import (
    ReleaseWeightsError,
    build_release_encoders,
    convert_pdan_release_state_dict,
    convert_xkd_release_backbone,
    convert_xkd_release_state_dict,
    export_pdan_release_head,
    export_release_encoders,
    load_pdan_release_head,
    load_release_state_dict,
    main,
    pdan_release_head_config,
    release_encoder_config,
)
from xmkd.models.vit import load_exported_encoder

DIM, DEPTH, HEADS = 16, 2, 2
VIDEO = {"input_size": (4, 32, 32), "patch_size": (2, 16, 16)}  # 2 x 2 x 2 tubelets of 1536 values
AUDIO = {"input_size": (8, 32), "patch_size": (4, 16)}  # 2 x 2 patches of 64 values
SIZES = {"input_sizes": {"video": VIDEO["input_size"], "audio": AUDIO["input_size"]},
         "patch_sizes": {"video": VIDEO["patch_size"], "audio": AUDIO["patch_size"]}}  # fmt: skip


# ----------------------------------------------------------------------------- XKD, release side


def release_backbone(modality: str, seed: int) -> dict[str, torch.Tensor]:
    """A release ``VideoViT`` / ``AudioViT`` state_dict (``vid_vit`` / ``aud_vit`` with
    ``apply_cls_token=True``, ``ViT_Backbone`` blocks with ``qkv_bias=False``, ``num_classes=0``)."""
    g = torch.Generator().manual_seed(seed)
    spec = VIDEO if modality == "video" else AUDIO
    patch_dim = torch.tensor(spec["patch_size"]).prod().item() * (3 if modality == "video" else 1)
    n = torch.tensor([s // p for s, p in zip(spec["input_size"], spec["patch_size"])]).prod().item()
    tok = "cuboid_embed" if modality == "video" else "patch_embed"

    def rnd(*shape: int, scale: float = 0.2, shift: float = 0.0) -> torch.Tensor:
        # float32 values (xmkd's parameters are float32), held in float64 for an exact comparison
        return (torch.randn(*shape, generator=g) * scale + shift).double()

    state = {
        f"{tok}.proj.weight": rnd(DIM, patch_dim, scale=0.05),
        f"{tok}.proj.bias": rnd(DIM),
        "cls_token": rnd(1, 1, DIM),
        "enc_pos_embed": rnd(1, 1 + n, DIM),
    }
    for i in range(DEPTH):
        b = f"encoder.blocks.{i}."
        state |= {
            b + "norm1.weight": rnd(DIM, shift=1.0), b + "norm1.bias": rnd(DIM),
            b + "attn.qkv.weight": rnd(3 * DIM, DIM, scale=0.3),
            b + "attn.proj.weight": rnd(DIM, DIM), b + "attn.proj.bias": rnd(DIM),
            b + "norm2.weight": rnd(DIM, shift=1.0), b + "norm2.bias": rnd(DIM),
            b + "mlp.fc1.weight": rnd(4 * DIM, DIM), b + "mlp.fc1.bias": rnd(4 * DIM),
            b + "mlp.fc2.weight": rnd(DIM, 4 * DIM), b + "mlp.fc2.bias": rnd(DIM),
        }  # fmt: skip
    state |= {"encoder_norm.weight": rnd(DIM, shift=1.0), "encoder_norm.bias": rnd(DIM)}
    return state


def release_vit_forward(state: dict, x: torch.Tensor, modality: str, eps: float) -> torch.Tensor:
    """The release's ``VideoViT.forward`` / ``AudioViT.forward`` at the native input size, written
    from ``vit_video.py`` / ``vit_audio.py`` / ``vit2.py``: rearrange + Linear, position embedding
    (CLS gets its own), pre-norm blocks with softmax(q k^T / sqrt(d)) attention, final norm."""
    if modality == "video":
        _, ph, pw = VIDEO["patch_size"][0], VIDEO["patch_size"][1], VIDEO["patch_size"][2]
        pt = VIDEO["patch_size"][0]
        patches = rearrange(x, "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)", pt=pt, ph=ph, pw=pw)
        tok = "cuboid_embed"
    else:
        ph, pw = AUDIO["patch_size"]
        patches = rearrange(x, "b c (h ph) (w pw) -> b (h w) (ph pw c)", ph=ph, pw=pw)
        tok = "patch_embed"
    h = patches @ state[f"{tok}.proj.weight"].T + state[f"{tok}.proj.bias"]
    pos = state["enc_pos_embed"]
    h = h + pos[:, 1:]
    cls = (state["cls_token"] + pos[:, :1]).expand(h.shape[0], -1, -1)
    h = torch.cat([cls, h], 1)

    def norm(v: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(v, (DIM,), state[name + ".weight"], state[name + ".bias"], eps)

    for i in range(DEPTH):
        b = f"encoder.blocks.{i}."
        bsz, n, c = h.shape
        qkv = (norm(h, b + "norm1") @ state[b + "attn.qkv.weight"].T).reshape(bsz, n, 3, HEADS, c // HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (c // HEADS) ** -0.5).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(bsz, n, c)
        h = h + y @ state[b + "attn.proj.weight"].T + state[b + "attn.proj.bias"]
        m = F.gelu(norm(h, b + "norm2") @ state[b + "mlp.fc1.weight"].T + state[b + "mlp.fc1.bias"])
        h = h + m @ state[b + "mlp.fc2.weight"].T + state[b + "mlp.fc2.bias"]
    return norm(h, "encoder_norm")


def XMKD_NAME(key: str) -> str:
    for old, new in (
        ("cuboid_embed.proj", "patch_embed"), ("patch_embed.proj", "patch_embed"),
        ("enc_pos_embed", "pos_embed"), ("encoder_norm", "norm"), ("encoder.blocks", "blocks"),
        ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.2"),
    ):  # fmt: skip
        key = key.replace(old, new)
    return key


def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {
        "video": torch.randn(2, 3, *VIDEO["input_size"], generator=g, dtype=torch.float64),
        "audio": torch.randn(2, 1, *AUDIO["input_size"], generator=g, dtype=torch.float64),
    }


def release_checkpoint() -> dict:
    """``save_checkpoint``'s dict for an ``XKD_Net`` under DDP: encoders, the MAE wrappers (whose
    encoder is the student backbone again), heads, decoders, DINO centres; optimiser and epoch."""
    model = {}
    for i, role in enumerate(("vid_student", "vid_teacher", "aud_student", "aud_teacher")):
        for k, v in release_backbone("video" if role.startswith("vid") else "audio", seed=i).items():
            model[f"module.{role}.backbone.{k}"] = v
            if role.endswith("student"):
                model[f"module.{role[:3]}_ae.encoder.{k}"] = v
        model |= {
            f"module.{role}.head.mlp.0.weight": torch.zeros(8, DIM),
            f"module.{role}.head.mlp.1.weight": torch.ones(8),  # LayerNorm of the projector
            f"module.{role}.head.last_layer.weight_g": torch.ones(32, 1),
            f"module.{role}.head.last_layer.weight_v": torch.zeros(32, 4),
        }
    for m in ("vid", "aud"):
        model |= {
            f"module.{m}_ae.dec_pos_embed": torch.zeros(1, 9, 8),
            f"module.{m}_ae.mask_token": torch.zeros(1, 1, 8),
            f"module.{m}_ae.mid_proj.weight": torch.zeros(8, DIM),
            f"module.{m}_ae.out_proj.weight": torch.zeros(64, 8),
            f"module.{m}_ae.decoder.blocks.0.norm1.weight": torch.ones(8),
        }
    model |= {
        "module.vt2as_ce_loss.center": torch.zeros(1, 32),
        "module.at2vs_ce_loss.center": torch.zeros(1, 32),
    }
    return {
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
        "epoch": 3,
    }


# ------------------------------------------------------------------------------------- XKD tests


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_every_release_tensor_lands_and_the_forward_matches_the_release(modality: str) -> None:
    release = release_backbone(modality, seed=0)
    converted = convert_xkd_release_backbone(release)
    # every release tensor lands, unchanged, where the release's eval code puts it (renamed to
    # xmkd's module names); nothing else is produced
    assert len(converted) == len(release)
    for key, value in release.items():
        assert torch.equal(converted[XMKD_NAME(key)], value), key
    spec = VIDEO if modality == "video" else AUDIO
    encoder = build_release_encoders({f"student_{modality}": converted}, num_heads=HEADS, **SIZES)[
        f"student_{modality}"
    ].double()
    x = inputs()[modality]
    expected = release_vit_forward(release, x, modality, eps=1e-5)
    torch.testing.assert_close(encoder(x), expected, rtol=1e-10, atol=1e-10)
    assert encoder.config.input_size == spec["input_size"] and encoder.config.num_heads == HEADS


def test_training_checkpoint_exports_four_encoders_that_reload_and_match(tmp_path: Path) -> None:
    ckpt = release_checkpoint()
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(ckpt, path)
    paths = export_release_encoders(path, tmp_path / "out", num_heads=HEADS, **SIZES)
    assert sorted(paths) == ["student_audio", "student_video", "teacher_audio", "teacher_video"]
    index = json.loads((tmp_path / "out" / "encoders.json").read_text())
    assert index["method"] == "xkd-release" and index["files"]["teacher_video"] == "teacher_video.pt"
    x = inputs()
    for name, p in paths.items():
        role, modality = name.split("_")
        release = {k[len(f"module.{'vid' if modality == 'video' else 'aud'}_{role}.backbone.") :]: v
                   for k, v in ckpt["model"].items()
                   if k.startswith(f"module.{'vid' if modality == 'video' else 'aud'}_{role}.backbone.")}  # fmt: skip
        encoder = load_exported_encoder(p).double().eval()  # the export format, weights_only
        expected = release_vit_forward(release, x[modality], modality, eps=1e-5)
        torch.testing.assert_close(encoder(x[modality]), expected, rtol=1e-10, atol=1e-10)
    # the four backbone files of save_state_dicts, in a directory, give the same tensors
    for role in ("vid_student", "vid_teacher", "aud_student", "aud_teacher"):
        prefix = f"module.{role}.backbone."
        torch.save({k[len(prefix) :]: v for k, v in ckpt["model"].items() if k.startswith(prefix)},
                   tmp_path / f"{role}.pth.tar")  # fmt: skip
    from_files = build_release_encoders(tmp_path, num_heads=HEADS, **SIZES)
    from_ckpt = convert_xkd_release_state_dict(ckpt)
    for name, enc in from_files.items():
        for k, v in enc.state_dict().items():
            assert torch.equal(v, from_ckpt[name][k].to(v.dtype)), (name, k)


def test_conversion_errors_list_every_offending_key(tmp_path: Path) -> None:
    ckpt = release_checkpoint()
    ckpt["model"]["module.vid_student.backbone.encoder.blocks.0.attn.rel_pos"] = torch.zeros(3)
    ckpt["model"]["module.mystery.weight"] = torch.zeros(3)
    with pytest.raises(ReleaseWeightsError) as err:
        convert_xkd_release_state_dict(ckpt)
    assert "mystery.weight" in str(err.value) and "unmapped release keys (2)" in str(err.value)
    # a copy of the student backbone that is not equal to it
    ckpt = release_checkpoint()
    ckpt["model"]["module.aud_ae.encoder.cls_token"] = torch.ones(1, 1, DIM)
    with pytest.raises(ReleaseWeightsError, match=r"aud_ae\.encoder\.cls_token"):
        convert_xkd_release_state_dict(ckpt)
    # missing encoder
    ckpt = release_checkpoint()
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if ".aud_teacher.backbone." not in k}
    with pytest.raises(ReleaseWeightsError, match=r"aud_teacher\.backbone\.\*"):
        convert_xkd_release_state_dict(ckpt)
    # missing tensors and wrong input sizes are listed by xmkd name
    release = release_backbone("video", seed=0)
    del release["encoder_norm.bias"], release["encoder.blocks.1.mlp.fc2.bias"]
    with pytest.raises(ReleaseWeightsError) as err:
        release_encoder_config(convert_xkd_release_backbone(release), "video", num_heads=HEADS, **VIDEO)
    assert (
        "missing" in str(err.value)
        and "norm.bias" in str(err.value)
        and "blocks.1.mlp.2.bias" in str(err.value)
    )
    converted = convert_xkd_release_backbone(release_backbone("video", seed=0))
    with pytest.raises(ReleaseWeightsError, match=r"pos_embed \(1, 9, 16\) != \(1, 393, 16\)"):
        release_encoder_config(converted, "video", num_heads=HEADS)  # the paper's 32x112x112 input
    with pytest.raises(ReleaseWeightsError, match="pass num_heads"):
        release_encoder_config(converted, "video", **VIDEO)
    with pytest.raises(ReleaseWeightsError, match="classifier head"):
        convert_xkd_release_backbone({**release_backbone("audio", 0), "head.weight": torch.zeros(2, DIM)})
    # a pickled module is refused by weights_only loading, with what to do about it
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buf)
    (tmp_path / "model.pth").write_bytes(buf.getvalue())
    with pytest.raises(ReleaseWeightsError, match="not a plain state_dict"):
        load_release_state_dict(tmp_path / "model.pth")


# ---------------------------------------------------------------------------- PDAN / MS-TCN


D_IN, CH, K, BLOCKS = 6, 8, 4, 3


def release_pdan_state(kind: str, stages: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``nn.DataParallel(PDAN(num_stages, num_layers, num_f_maps, dim, num_classes)).state_dict()``
    (or MS-TCN's ``MultiStageModel``): Conv1d weights (out, in, kernel), DAL without q/k/v bias."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.4) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).double()  # float32 values, as xmkd's

    state = {}
    for s in range(stages):
        pre = "module.stage1." if s == 0 else f"module.stages.{s - 1}."
        state |= {pre + "conv_1x1.weight": rnd(CH, D_IN if s == 0 else K, 1), pre + "conv_1x1.bias": rnd(CH)}
        for i in range(BLOCKS):
            b = f"{pre}layers.{i}."
            if kind == "pdan":
                state |= {
                    b + "conv_attention.rel_t": rnd(CH, 1, 3, scale=1.0),
                    b + "conv_attention.key_conv.weight": rnd(CH, CH, 1),
                    b + "conv_attention.query_conv.weight": rnd(CH, CH, 1),
                    b + "conv_attention.value_conv.weight": rnd(CH, CH, 1),
                }
            else:
                state |= {b + "conv_dilated.weight": rnd(CH, CH, 3), b + "conv_dilated.bias": rnd(CH)}
            state |= {b + "conv_1x1.weight": rnd(CH, CH, 1), b + "conv_1x1.bias": rnd(CH)}
        state |= {pre + "conv_out.weight": rnd(K, CH, 1), pre + "conv_out.bias": rnd(K)}
    return state


def release_head_forward(
    state: dict, x: torch.Tensor, mask: torch.Tensor, kind: str, stages: int
) -> torch.Tensor:
    """The release's forward in eval mode, (B, D, T) layout, ``mask`` (B, K, T) as its training
    script builds it: PDAN.py (``DAL`` by pad + unfold) or MS-TCN's model.py; returns the last
    stage's (B, K, T) output."""
    st = {k.removeprefix("module."): v for k, v in state.items()}
    m = mask[:, 0:1, :]

    def dal(h: torch.Tensor, pre: str, d: int) -> torch.Tensor:
        padded = F.pad(h, (d, d))
        q = F.conv1d(h, st[pre + "query_conv.weight"])
        k = F.conv1d(padded, st[pre + "key_conv.weight"]).unfold(2, 2 * d + 1, 1)
        v = F.conv1d(padded, st[pre + "value_conv.weight"]).unfold(2, 2 * d + 1, 1)
        k = torch.stack([k[..., 0], k[..., d], k[..., 2 * d]], -1)
        v = torch.stack([v[..., 0], v[..., d], v[..., 2 * d]], -1) + st[pre + "rel_t"]
        return (torch.softmax(q.unsqueeze(-1) * k, -1) * v).sum(-1)

    def stage(h: torch.Tensor, pre: str) -> torch.Tensor:
        out = F.conv1d(h, st[pre + "conv_1x1.weight"], st[pre + "conv_1x1.bias"])  # not masked
        for i in range(BLOCKS):
            b, d = f"{pre}layers.{i}.", 2**i
            if kind == "pdan":
                y = F.relu(dal(out, b + "conv_attention.", d))
            else:
                y = F.relu(
                    F.conv1d(
                        out, st[b + "conv_dilated.weight"], st[b + "conv_dilated.bias"], padding=d, dilation=d
                    )
                )
            y = F.conv1d(y, st[b + "conv_1x1.weight"], st[b + "conv_1x1.bias"])
            out = (out + y) * m
        return F.conv1d(out, st[pre + "conv_out.weight"], st[pre + "conv_out.bias"]) * m

    out = stage(x, "stage1.")
    for s in range(1, stages):
        nxt = out * m if kind == "pdan" else F.softmax(out, dim=1) * m  # PDAN: raw logits
        out = stage(nxt, f"stages.{s - 1}.")
    return out


@pytest.mark.parametrize("kind", ["pdan", "mstcn"])
@pytest.mark.parametrize("stages", [1, 2])
def test_release_head_lands_and_matches_the_release_on_unpadded_input(kind: str, stages: int) -> None:
    release = release_pdan_state(kind, stages)
    converted = convert_pdan_release_state_dict(release, kind)
    assert sum(v.numel() for v in converted.values()) == sum(v.numel() for v in release.values())
    assert pdan_release_head_config(release, kind) == {
        "kind": kind, "in_dim": D_IN, "num_classes": K, "channels": CH, "num_blocks": BLOCKS, "num_stages": stages,
    }  # fmt: skip
    head = load_pdan_release_head(release, kind).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 11, D_IN, generator=g, dtype=torch.float64)
    ones = torch.ones(2, K, 11, dtype=torch.float64)
    expected = release_head_forward(release, x.transpose(1, 2), ones, kind, stages).transpose(1, 2)
    logits, _ = head(x, torch.ones(2, 11, dtype=torch.bool))
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)
    if kind == "pdan":  # a rel_t entry lands at (position, channel)
        rel = release["module.stage1.layers.1.conv_attention.rel_t"]
        assert head.stages[0].blocks[1].attention.rel[2, 5] == rel[5, 0, 2]


def test_padded_input_differs_from_the_release_as_documented() -> None:
    """xmkd on a padded batch = the release on each video alone; the release itself on the padded
    batch differs at the last valid steps (its input projection's bias leaks into padded steps)."""
    release = release_pdan_state("pdan", 1)
    head = load_pdan_release_head(release).double()
    g = torch.Generator().manual_seed(2)
    short = torch.randn(1, 5, D_IN, generator=g, dtype=torch.float64)
    batch = torch.cat([short, torch.zeros(1, 6, D_IN, dtype=torch.float64)], 1)  # zero-padded, as loaders do
    mask = torch.zeros(1, 11, dtype=torch.bool)
    mask[0, :5] = True
    xmkd_logits, _ = head(batch, mask)
    alone = release_head_forward(
        release, short.transpose(1, 2), torch.ones(1, K, 5, dtype=torch.float64), "pdan", 1
    )
    torch.testing.assert_close(xmkd_logits[0, :5], alone[0].T, rtol=1e-10, atol=1e-10)
    padded = release_head_forward(
        release, batch.transpose(1, 2), mask[:, None].expand(1, K, 11).double(), "pdan", 1
    )
    assert (padded[0, :, :5].T - alone[0].T).abs().max() > 1e-3


def test_pdan_export_and_errors(tmp_path: Path) -> None:
    release = release_pdan_state("pdan", 2)
    torch.save(release, tmp_path / "pdan.pt")
    path = export_pdan_release_head(tmp_path / "pdan.pt", tmp_path / "out")
    config = json.loads(path.with_suffix(".json").read_text())
    assert config["num_stages"] == 2 and config["in_dim"] == D_IN
    state = torch.load(path, weights_only=True)
    assert set(state) == set(load_pdan_release_head(release).state_dict())
    main(["--release", str(tmp_path / "pdan.pt"), "--out", str(tmp_path / "cli"), "--kind", "pdan"])
    assert torch.load(tmp_path / "cli" / "pdan_head.pt", weights_only=True).keys() == state.keys()
    with pytest.raises(ReleaseWeightsError, match=r"query_conv\.bias"):
        convert_pdan_release_state_dict(
            {**release, "module.stage1.layers.0.conv_attention.query_conv.bias": torch.zeros(CH)}
        )
    broken = {k: v for k, v in release.items() if "layers.2.conv_1x1.bias" not in k}
    with pytest.raises(ReleaseWeightsError, match=r"missing.*stages\.0\.blocks\.2\.proj\.bias"):
        convert_pdan_release_state_dict(broken)
