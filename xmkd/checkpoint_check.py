"""Is this checkpoint a state of the model the config builds? Asked before validate/test/predict or a
resumed fit runs anything.

Lightning's CLI replaces the config's model by whatever class and hyperparameters a ``--ckpt_path``
checkpoint names, so a teacher checkpoint given with a student config is silently evaluated as the
teacher and filed under the student's experiment. The checks here compare the checkpoint's module
class and the hyperparameters that say what the model reads and predicts (:data:`KEY_HPARAMS`)
with the config's, and name both sides when they differ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xmkd.errors import ConfigError

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
    import torch

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
