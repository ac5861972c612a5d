"""``xmkd export --ckpt CKPT --out DIR``: the reusable weights of any run's Lightning checkpoint.

- an :class:`~xmkd.modules.xkd.XKDPretrainer` checkpoint (``xmkd fit`` of an ``experiments/xkd``
  recipe, or the pretrain pipeline's): the student and teacher encoders, as
  :meth:`~xmkd.modules.xkd.XKDPretrainer.export_encoders` writes them (``student_video.pt`` + its
  ``.json``, ... and ``encoders.json``), ready for ``VideoClassifier(encoder_path=...)``, the SVM
  protocol and feature extraction;
- an :class:`~xmkd.modules.detection.AugmentedRGBStudent` checkpoint: the distilled RGB student as an
  RGB-only :class:`~xmkd.modules.detection.SingleStreamDetector` checkpoint (``rgb_student.ckpt``)
  that loads without the teacher, e.g. ``xmkd predict --config experiments/detection/rgb_pdan_<data>.yaml
  --ckpt_path DIR/rgb_student.ckpt``; an RGB ``SingleStreamDetector`` is copied the same way
  (``rgb_detector.ckpt``), without optimiser state.

Any other checkpoint is refused with what it is. Converting released weights of other codebases is
a different tool: :mod:`xmkd.models.convert`.
"""

from __future__ import annotations

import argparse
import contextvars
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from xmkd.errors import ConfigError

__all__ = ["checkpoint_module_class", "export_checkpoint", "load_checkpoint_module"]

XKD = "xmkd.modules.xkd.XKDPretrainer"
STUDENT = "xmkd.modules.detection.AugmentedRGBStudent"
SINGLE = "xmkd.modules.detection.SingleStreamDetector"
TEACHER = "xmkd.modules.detection.TwoStreamTeacher"
CLASSIFIER = "xmkd.modules.classifier.VideoClassifier"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as a dict on the CPU, with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("ckpt", f"{path}: checkpoint not found")
    # weights_only=False: Lightning checkpoints carry hyper-parameters and loop state (trusted: our runs)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
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


def _detector_checkpoint(model: Any) -> dict[str, Any]:
    """A checkpoint dict that ``SingleStreamDetector.load_from_checkpoint`` and the xmkd CLI load."""
    import lightning

    hparams = {"_class_path": SINGLE, **dict(model.hparams)}
    hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    return {
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "hyper_parameters": hparams,
        "hparams_name": "kwargs",
        "pytorch-lightning_version": lightning.__version__,
    }


def rgb_detector_from_student(checkpoint: Mapping[str, Any]) -> Any:
    """The distilled student of an AugmentedRGBStudent checkpoint as an RGB SingleStreamDetector.

    The student's RGB head and the detector's head are built by the same ``make_head`` from the same
    head hyper-parameters; the distillation projections and the teacher are left behind.
    """
    from xmkd.modules.detection import DetectionModule, SingleStreamDetector

    hp = checkpoint["hyper_parameters"]
    names = [p for p in inspect.signature(DetectionModule.__init__).parameters if p != "self"]
    head_hp = {k: hp[k] for k in names if k in hp}
    detector = SingleStreamDetector(modality="rgb", input_dim=int(hp.get("rgb_dim", 1024)), **head_hp)
    head = {k[len("head.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("head.")}
    if not head:
        raise ConfigError("ckpt", "the student checkpoint holds no head.* weights")
    detector.head.load_state_dict(head)
    return detector


def export_checkpoint(ckpt: str | Path, out: str | Path) -> dict[str, Path]:
    """Write the exportable weights of ``ckpt`` into ``out``; returns name -> written file."""
    ckpt, out = Path(ckpt), Path(out)
    checkpoint = read_checkpoint(ckpt)
    kind = checkpoint_module_class(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    if kind == XKD:
        from xmkd.modules.xkd import XKDPretrainer

        return load_checkpoint_module(XKDPretrainer, ckpt).export_encoders(out)
    if kind == STUDENT:
        path = out / "rgb_student.ckpt"
        torch.save(_detector_checkpoint(rgb_detector_from_student(checkpoint)), path)
        return {"rgb_student": path}
    if kind == SINGLE and checkpoint["hyper_parameters"].get("modality", "rgb") == "rgb":
        from xmkd.modules.detection import SingleStreamDetector

        path = out / "rgb_detector.ckpt"
        torch.save(_detector_checkpoint(load_checkpoint_module(SingleStreamDetector, ckpt)), path)
        return {"rgb_detector": path}
    raise ConfigError(
        "ckpt",
        f"{ckpt} is a {kind or 'checkpoint of an unknown module'}; export takes an XKDPretrainer "
        "(-> encoders), an AugmentedRGBStudent (-> the RGB student) or an RGB SingleStreamDetector",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ckpt", required=True, help="a Lightning checkpoint of an xmkd run (e.g. last.ckpt)"
    )
    parser.add_argument("--out", required=True, help="folder for the exported files")


def run(args: argparse.Namespace) -> int:
    for name, path in export_checkpoint(args.ckpt, args.out).items():
        print(f"{name}: {path}")
    return 0
