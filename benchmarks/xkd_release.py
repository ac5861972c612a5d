"""The released XKD training step (pritamqu/XKD, ``codes/train``), run from a checkout of it.

PERFORMANCE.md's rule: a speed claim compares against the reference timed in the same run. This
module imports the release's own model and optimiser code from ``XKD_RELEASE`` (the checkout's root,
holding ``codes/train``) and runs one optimiser step the way its ``main_xkd.train_one_epoch`` does in
fp32: forward (all losses), ``loss.item()`` finiteness check, backward, its per-parameter
``clip_gradients`` (``.item()`` per tensor), ``cancel_gradients_last_layer``, ``optimizer.step()`` and
its ``update_teacher``. Nothing of the release is copied here; two import shims make its 2023 code
load on current libraries: ``torch._six.inf`` (removed from torch) and
``timm.optim.optim_factory.add_weight_decay`` (renamed ``param_groups_weight_decay`` in timm), which
the release imports but, with ``weight_decay=None`` as in ``main_xkd``, never calls.

The release needs ``timm``, ``einops`` and ``torchsummary`` (``pip install -e '.[bench]'``).
Inputs follow its ``global_local`` augmentations at the Kinetics config's sizes: video views
``[B, 3, 32, 112, 112]`` and ``[B, 3, 8, 96, 96]``, spectrogram views ``[B, 1, 80, 448]`` and
``[B, 1, 80, 112]`` (the local views are a quarter of the global duration).
"""

from __future__ import annotations

import math
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

# The release's encoder names for the benchmark's sizes (its ``encoder_dict``).
ENCODER_CFG = {"base": "base_encoder", "tiny": "tiny_encoder"}
CONFIG = "configs/pretext/kinetics400/xkd.yaml"


def release_root(path: str | None = None) -> Path | None:
    """The release's ``codes/train`` folder from ``path`` or ``$XKD_RELEASE``; None when unset."""
    path = path or os.environ.get("XKD_RELEASE")
    if not path:
        return None
    root = Path(path).expanduser()
    for candidate in (root / "codes" / "train", root):
        if (candidate / "models" / "xkd.py").is_file() and (candidate / CONFIG).is_file():
            return candidate
    raise FileNotFoundError(
        f"XKD_RELEASE={path}: no codes/train/models/xkd.py and {CONFIG} under it "
        "(expected a checkout of github.com/pritamqu/XKD)"
    )


def _install_import_shims() -> None:
    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.inf = math.inf  # type: ignore[attr-defined]
        sys.modules["torch._six"] = six
    try:
        import timm.optim.optim_factory as factory
        from timm.optim import param_groups_weight_decay
    except ImportError as err:
        raise ImportError(
            f"the XKD release needs timm, einops and torchsummary: pip install -e '.[bench]' ({err})"
        ) from err
    if not hasattr(factory, "add_weight_decay"):
        factory.add_weight_decay = param_groups_weight_decay  # type: ignore[attr-defined]


def _import_release(root: Path) -> tuple[Any, Any, dict]:
    """(models.get_model, optimizers.get_optimizer, the Kinetics XKD config) from the release."""
    _install_import_shims()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    # The release's top-level packages are called ``models`` and ``optimizers``: import them from
    # its folder, not from anything else of those names already imported.
    for name in [m for m in sys.modules if m.split(".")[0] in ("models", "optimizers")]:
        del sys.modules[name]
    import models  # type: ignore[import-not-found]
    import models.modules as modules  # type: ignore[import-not-found]
    import models.modules.vit_video as vit_video  # type: ignore[import-not-found]
    import optimizers  # type: ignore[import-not-found]

    # The release defines ViT-Tiny in its encoders' own tables but not in the table XKD_Net reads
    # its widths from: register the release's own entry there, so ``tiny`` builds as it defines it.
    for name, spec in vit_video.encoder_dict.items():
        modules.encoder_dict.setdefault(name, spec)
    with open(root / CONFIG) as f:
        cfg = yaml.safe_load(f)
    return models.get_model, optimizers.get_optimizer, cfg


def build_release_step(
    root: Path, size: str, batch: int, local_views: int = 1
) -> tuple[Callable[[], torch.Tensor], int]:
    """(one full release training step on fixed random views, trainable parameter count)."""
    get_model, get_optimizer, cfg = _import_release(root)
    model_cfg = dict(cfg["model"])
    kwargs = dict(model_cfg["kwargs"])
    kwargs["teacher_cfg"] = kwargs["student_cfg"] = ENCODER_CFG[size]
    model = get_model({"name": model_cfg["name"], "kwargs": kwargs})
    model.init_teacher_student_same_weights()
    model.set_teacher_no_grad()
    model.train()
    opt_cfg = cfg["hyperparams"]["optimizer"]
    optimizer = get_optimizer(
        name=opt_cfg["name"], model=model, lr=1e-4, weight_decay=None, betas=opt_cfg["betas"]
    )
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = 1e-4
        if i == 1:
            group["weight_decay"] = cfg["hyperparams"]["weight_decay"]["base"]

    fwd = dict(model_cfg["fwd_kwargs"])
    clip = fwd.pop("clip_grad")
    freeze_last_layer = fwd.pop("freeze_last_layer")
    vt, at = model_cfg["video_temp_kwargs"], model_cfg["audio_temp_kwargs"]
    fwd["teacher_temp"] = {"video": vt["teacher_temp"], "audio": at["teacher_temp"]}
    fwd["student_temp"] = {"video": vt["student_temp"], "audio": at["student_temp"]}

    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(batch, 3, 32, 112, 112, generator=g)] + [
        torch.randn(batch, 3, 8, 96, 96, generator=g) for _ in range(local_views)
    ]
    specs = [torch.randn(batch, 1, 80, 448, generator=g)] + [
        torch.randn(batch, 1, 80, 112, generator=g) for _ in range(local_views)
    ]
    momentum = cfg["hyperparams"]["vid_ema"]["base"]

    def step() -> torch.Tensor:
        optimizer.zero_grad()
        out = model(frames, specs, **fwd)
        loss = out["loss"]
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"release step: loss {loss.item()}")
        loss.backward()
        model.clip_gradients(clip)
        model.cancel_gradients_last_layer(1, freeze_last_layer)
        optimizer.step()
        model.update_teacher(vm=momentum, am=momentum)
        return loss.detach()

    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return step, n_trainable
