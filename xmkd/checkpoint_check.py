"""Is this checkpoint a state of the model the config builds? Asked before validate/test/predict or a
resumed fit runs anything.

Lightning's CLI replaces the config's model by whatever class and hyperparameters a ``--ckpt_path``
checkpoint names, so a teacher checkpoint given with a student config is silently evaluated as the
teacher and filed under the student's experiment. The checks here compare the checkpoint's module
class and the hyperparameters that say what the model reads and predicts (:data:`KEY_HPARAMS`)
with the config's, and name both sides when they differ.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from xmkd.errors import ConfigError

#: The LightningModule classes by class path, as checkpoints record them.
XKD = "xmkd.modules.xkd.XKDPretrainer"
STUDENT = "xmkd.modules.detection.AugmentedRGBStudent"
SINGLE = "xmkd.modules.detection.SingleStreamDetector"
TEACHER = "xmkd.modules.detection.TwoStreamTeacher"
CLASSIFIER = "xmkd.modules.classifier.VideoClassifier"


#: Hyperparameters that define what a module consumes and produces: a checkpoint that differs in
#: one of them is another model, whatever its class. Others (lr, plotting, dropout) may differ.
KEY_HPARAMS = (
    "num_classes",
    "modality",
    "aux_modality",
    "input_dim",
    "rgb_dim",
    "aux_dim",
    "variant",
    "mode",
    "num_frames",
    "img_size",
    "mel_bins",
    "audio_frames",
    "probe_num_classes",
)


def read_checkpoint_hparams(path: str | os.PathLike) -> dict[str, Any]:
    """The ``hyper_parameters`` a Lightning checkpoint stores (``{}`` when it stores none)."""
    return dict(read_checkpoint_header(path).get("hyper_parameters") or {})


def read_checkpoint_header(path: str | os.PathLike) -> dict[str, Any]:
    """``hyper_parameters``, ``epoch`` and ``global_step`` of a Lightning checkpoint, read without
    loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("ckpt_path", f"{path} does not exist or is not a file")
    try:
        # mmap: only the small hparams dict is read from a checkpoint of any size
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # any failure to read the file is the user's answer
        raise ConfigError("ckpt_path", f"{path} is not a readable checkpoint: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ConfigError("ckpt_path", f"{path} is not a Lightning checkpoint (no state_dict)")
    return {k: ckpt.get(k) for k in ("hyper_parameters", "epoch", "global_step")}


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def describe_model(class_path: str, hparams: Mapping[str, Any]) -> str:
    """``TwoStreamTeacher (aux_modality='flow', num_classes=12)``: the class and its key hparams."""
    keys = [f"{k}={hparams[k]!r}" for k in KEY_HPARAMS if k in hparams]
    return f"{_short(class_path)}" + (f" ({', '.join(keys)})" if keys else "")


def checkpoint_mismatch(
    ckpt_hparams: Mapping[str, Any], class_path: str, init_args: Mapping[str, Any]
) -> str | None:
    """Why a checkpoint with ``ckpt_hparams`` is not a state of ``class_path(**init_args)``, or None.

    A checkpoint without a recorded class (saved outside the xmkd CLI) is compared on its key
    hparams only.
    """
    have_class = ckpt_hparams.get("_class_path")
    if have_class and have_class != class_path:
        return (
            f"holds a {describe_model(have_class, ckpt_hparams)} ({have_class}), but the config builds a "
            f"{describe_model(class_path, init_args)} ({class_path})"
        )
    differ = [
        k for k in KEY_HPARAMS if k in ckpt_hparams and k in init_args and ckpt_hparams[k] != init_args[k]
    ]
    if differ:
        have = ", ".join(f"{k}={ckpt_hparams[k]!r}" for k in differ)
        want = ", ".join(f"{k}={init_args[k]!r}" for k in differ)
        return f"holds a {_short(class_path)} with {have}, but the config sets {want}"
    return None


def check_checkpoint_matches(
    path: str | os.PathLike, class_path: str, init_args: Mapping[str, Any], what: str = "ckpt_path"
) -> None:
    """Raise :class:`ConfigError` (key ``what``) when the checkpoint at ``path`` is another model."""
    why = checkpoint_mismatch(read_checkpoint_hparams(path), class_path, init_args)
    if why is None:
        return
    path = Path(path)
    run_config = (path.parent.parent if path.parent.name == "checkpoints" else path.parent) / "config.yaml"
    hint = (
        f"run it with the config it was trained with ({run_config})"
        if run_config.is_file()
        else "pass a checkpoint of this config's model"
    )
    raise ConfigError(what, f"{path} {why}; {hint}")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict on the CPU, with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("ckpt", f"{path}: checkpoint not found")
    try:
        # weights_only=False: Lightning checkpoints carry hyper-parameters and loop state (trusted: our runs)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: name it (the loader's own message follows)
        raise ConfigError("ckpt", f"{path} is not a readable checkpoint: {type(e).__name__}: {e}") from e
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ConfigError("ckpt", f"{path}: not a Lightning checkpoint (no state_dict)")
    return dict(checkpoint)


def checkpoint_module_class(checkpoint: Mapping[str, Any]) -> str | None:
    """The LightningModule class a checkpoint was saved from (``package.module.Class``).

    LightningCLI records it as ``_class_path``; for modules built in Python (tests, scripts) it is
    recognised by the hyper-parameters only that class has. ``None``: unknown.
    """
    hp = checkpoint.get("hyper_parameters") or {}
    if hp.get("_class_path"):
        return str(hp["_class_path"])
    if "encoder_path" in hp:
        return CLASSIFIER
    if "variant" in hp and "video_mask_ratio" in hp:
        return XKD
    if "teacher_dims" in hp or "teacher_checkpoint" in hp:
        return STUDENT
    if "aux_modality" in hp:
        return TEACHER
    if "modality" in hp and "input_dim" in hp:
        return SINGLE
    return None


def load_checkpoint_module(cls: type, path: str | Path, **overrides: Any) -> Any:
    """``cls.load_from_checkpoint`` on the CPU, in a fresh context: inside LightningCLI's (a
    VideoClassifier being built) Lightning would hand the loaded module the caller's hyper-parameters."""
    return contextvars.Context().run(cls.load_from_checkpoint, str(path), map_location="cpu", **overrides)
