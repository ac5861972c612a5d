"""The pipelines by name: what ``xmkd pipeline <name>`` runs and ``make <name>`` calls.

A pipeline is a module with ``add_arguments(parser)`` and ``run(args)``; adding one is one module and
one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from xmkd.pipelines import (
    distill_detection,
    distill_detection_raw,
    eval_ablation,
    finetune,
    linear_eval,
    pretrain_xkd,
    pretrain_xkd_ablation,
    xkd_to_detection,
)


@dataclass(frozen=True)
class Pipeline:
    """A registered pipeline: its module (``add_arguments`` / ``run``) and its one-line help."""

    module: ModuleType
    help: str


PIPELINES: dict[str, Pipeline] = {
    "pretrain-xkd": Pipeline(pretrain_xkd, "XKD pretraining; SVM vs random init; exports encoders"),
    "xkd-ablation": Pipeline(pretrain_xkd_ablation, "SVM top-1 of XKD ablation rows (a)-(f) vs random init"),
    "distill-detection": Pipeline(distill_detection, "RGB / aux / teacher / students table"),
    "linear-eval": Pipeline(linear_eval, "linear-SVM protocol on every fold (C by grouped CV on train)"),
    "finetune": Pipeline(finetune, "fine-tune an exported encoder on every fold (UCF101/HMDB51 recipe)"),
    "eval-ablation": Pipeline(eval_ablation, "random vs reconstruction-only vs XKD: SVM + fine-tune table"),
    "distill-detection-raw": Pipeline(
        distill_detection_raw, "raw video -> flow -> features -> teacher/student table"
    ),
    "xkd-to-detection": Pipeline(
        xkd_to_detection, "XKD / MAE-only / random-init RGB features -> teacher/student table"
    ),
}

__all__ = ["PIPELINES", "Pipeline"]
