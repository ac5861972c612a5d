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

``--format onnx|torchscript`` (detection checkpoints only) writes the RGB student's head instead, as a
graph that needs neither xmkd nor Lightning: ``rgb_student.onnx`` (or ``rgb_detector.onnx``) for
onnxruntime, ``rgb_student.torchscript.pt`` for ``torch.jit.load``. Inputs ``features`` (B, T, D)
float32 and ``mask`` (B, T) bool (True = valid step), output ``logits`` (B, T, C); B and T are
dynamic. Each export is run once against the PyTorch module on videos of several lengths, padded
ones included, and refused when a logit differs by more than :data:`PARITY_ATOL`. ONNX needs the
``export`` extra (``pip install 'xmkd[export]'``: onnx, onnxscript, onnxruntime).

Any other checkpoint is refused with what it is. Converting released weights of other codebases is
a different tool: :mod:`xmkd.models.convert`.
"""

from __future__ import annotations

import argparse
import inspect
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning
import torch
from torch import Tensor, nn

from xmkd.checkpoint_check import (
    SINGLE,
    STUDENT,
    XKD,
    checkpoint_module_class,
    load_checkpoint_module,
    read_checkpoint,
)
from xmkd.errors import ConfigError
from xmkd.modules.detection import DetectionModule, SingleStreamDetector
from xmkd.modules.xkd import XKDPretrainer
from xmkd.runs import check_writable

__all__ = [
    "DetectionScores",
    "check_exported",
    "checkpoint_module_class",
    "export_checkpoint",
    "export_onnx",
    "export_torchscript",
    "load_checkpoint_module",
]

ExportFormat = Literal["ckpt", "onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("ckpt", "onnx", "torchscript")
#: Largest |exported - PyTorch| allowed on a logit; float32 reorderings stay near 1e-6.
PARITY_ATOL = 1e-4
#: Lengths the parity check runs: shorter than the largest PDAN dilation (16), the export example's
#: length, and longer ones, so that a graph frozen at one T fails.
PARITY_STEPS = (5, 24, 97)
EXPORT_EXAMPLE_STEPS = 24
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def _detector_checkpoint(model: Any) -> dict[str, Any]:
    """A checkpoint dict that ``SingleStreamDetector.load_from_checkpoint`` and the xmkd CLI load."""
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
    hp = checkpoint["hyper_parameters"]
    names = [p for p in inspect.signature(DetectionModule.__init__).parameters if p != "self"]
    head_hp = {k: hp[k] for k in names if k in hp}
    detector = SingleStreamDetector(modality="rgb", input_dim=int(hp.get("rgb_dim", 1024)), **head_hp)
    head = {k[len("head.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("head.")}
    if not head:
        raise ConfigError("ckpt", "the student checkpoint holds no head.* weights")
    detector.head.load_state_dict(head)
    return detector


class DetectionScores(nn.Module):
    """A detection head as a deployable graph: ``(features (B, T, D), mask (B, T) bool) -> logits
    (B, T, C)``, without the embeddings the distillation terms read."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.head(features, mask)[0]


def example_inputs(input_dim: int, steps: int, batch: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random features and a mask in which every video after the first is shorter (padded)."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, steps, input_dim, generator=g)
    lengths = torch.tensor([max(1, steps - (steps // 3) * b) for b in range(batch)])
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    return features * mask[..., None], mask


def _scores(head: nn.Module) -> DetectionScores:
    """A copy-free wrapper in eval mode (dropout off), on the CPU."""
    return DetectionScores(head).cpu().eval()


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ModuleNotFoundError as e:
        raise ConfigError(
            "format", f"onnx export needs onnx, onnxscript and onnxruntime ({e}); pip install 'xmkd[export]'"
        ) from None
    return onnx, onnxruntime


def export_onnx(head: nn.Module, path: str | Path, input_dim: int) -> Path:
    """Write ``head`` as an ONNX graph with dynamic batch and step axes (see the module docstring)."""
    _onnx_modules()
    path = Path(path)
    model = _scores(head)
    batch, steps = torch.export.Dim("batch", min=1), torch.export.Dim("steps", min=1)
    with torch.no_grad(), warnings.catch_warnings():
        # both inputs share the two Dims, so the exporter keeps one name per axis and says so
        warnings.filterwarnings("ignore", "# The axis name", UserWarning)
        torch.onnx.export(
            model,
            example_inputs(input_dim, EXPORT_EXAMPLE_STEPS),
            str(path),
            input_names=["features", "mask"],
            output_names=["logits"],
            dynamic_shapes={"features": {0: batch, 1: steps}, "mask": {0: batch, 1: steps}},
            external_data=False,
            dynamo=True,
            verbose=False,
        )
    return path


def export_torchscript(head: nn.Module, path: str | Path, input_dim: int) -> Path:
    """Write ``head`` as a traced TorchScript module. Tracing (not scripting): the head's shapes
    never steer Python control flow once exporting (see ``dilated_attention_exportable``), so the
    trace holds for every T; :func:`check_exported` runs lengths other than the traced one."""
    path = Path(path)
    model = _scores(head)
    with torch.no_grad(), warnings.catch_warnings():
        # recent torch marks torch.jit deprecated; TorchScript is asked for by name here
        warnings.filterwarnings("ignore", "`torch.jit.*` is deprecated", FutureWarning)
        traced = torch.jit.trace(model, example_inputs(input_dim, EXPORT_EXAMPLE_STEPS), check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def _run_exported(fmt: str, path: Path) -> Any:
    """A function (features, mask) -> logits (B, T, C) numpy that runs the exported file."""
    if fmt == "onnx":
        _, onnxruntime = _onnx_modules()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda f, m: session.run(["logits"], {"features": f.numpy(), "mask": m.numpy()})[0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.*` is deprecated", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")

    def run(features: Tensor, mask: Tensor) -> Any:
        with torch.no_grad():
            return module(features, mask).numpy()

    return run


def check_exported(
    fmt: str, path: str | Path, head: nn.Module, input_dim: int, steps: tuple[int, ...] = PARITY_STEPS
) -> float:
    """Largest |exported - PyTorch| logit over padded batches of each length in ``steps``; raises a
    ConfigError naming the file when it exceeds :data:`PARITY_ATOL`."""
    run_exported = _run_exported(fmt, Path(path))
    model = _scores(head)
    worst = 0.0
    for t in steps:
        features, mask = example_inputs(input_dim, t, seed=t)
        with torch.no_grad():
            expected = model(features, mask)
        got = torch.from_numpy(run_exported(features, mask))
        if got.shape != expected.shape:
            raise ConfigError(
                "format", f"{path}: logits {tuple(got.shape)} for {t} steps, expected {tuple(expected.shape)}"
            )
        worst = max(worst, float((got - expected).abs().max()))
    if not worst <= PARITY_ATOL:  # also catches NaN
        raise ConfigError("format", f"{path}: max |{fmt} - PyTorch| = {worst:.3g} > {PARITY_ATOL}")
    return worst


def export_graph(detector: Any, fmt: str, path: Path) -> tuple[Path, float]:
    """Write the head of an RGB detector as ``fmt`` and check it; returns the file and the parity."""
    input_dim = int(detector.hparams.input_dim)
    writer = export_onnx if fmt == "onnx" else export_torchscript
    writer(detector.head, path, input_dim)
    return path, check_exported(fmt, path, detector.head, input_dim)


def _rgb_detector(ckpt: Path, checkpoint: Mapping[str, Any], kind: str | None) -> tuple[str, Any] | None:
    """(export name, RGB SingleStreamDetector) of a detection checkpoint; None for other kinds."""
    if kind == STUDENT:
        return "rgb_student", rgb_detector_from_student(checkpoint)
    if kind == SINGLE and checkpoint["hyper_parameters"].get("modality", "rgb") == "rgb":
        return "rgb_detector", load_checkpoint_module(SingleStreamDetector, ckpt)
    return None


def export_checkpoint(
    ckpt: str | Path, out: str | Path, fmt: ExportFormat = "ckpt", report: dict[str, float] | None = None
) -> dict[str, Path]:
    """Write the exportable weights of ``ckpt`` into ``out``; returns name -> written file.

    ``fmt`` ``onnx`` / ``torchscript``: the RGB detector of a detection checkpoint as a graph, checked
    against PyTorch; its max |difference| goes into ``report`` (name -> value) when given.
    """
    ckpt, out = Path(ckpt), Path(out)
    if fmt not in FORMATS:
        raise ConfigError("format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    checkpoint = read_checkpoint(ckpt)
    kind = checkpoint_module_class(checkpoint)
    found = _rgb_detector(ckpt, checkpoint, kind)
    if fmt != "ckpt" and found is None:
        raise ConfigError(
            "format",
            f"{ckpt} is a {kind or 'checkpoint of an unknown module'}; --format {fmt} takes an "
            "AugmentedRGBStudent or an RGB SingleStreamDetector",
        )
    check_writable(out, "out")
    if found is not None:
        name, detector = found
        if fmt == "ckpt":
            path = out / f"{name}.ckpt"
            torch.save(_detector_checkpoint(detector), path)
            return {name: path}
        path, diff = export_graph(detector, fmt, out / f"{name}{SUFFIXES[fmt]}")
        if report is not None:
            report[name] = diff
        return {name: path}
    if kind == XKD:
        return load_checkpoint_module(XKDPretrainer, ckpt).export_encoders(out)
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
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="ckpt",
        help="ckpt (default): weights for xmkd; onnx / torchscript: the RGB detector's head as a graph "
        "(detection checkpoints), checked against PyTorch",
    )


def run(args: argparse.Namespace) -> int:
    report: dict[str, float] = {}
    for name, path in export_checkpoint(args.ckpt, args.out, args.format, report).items():
        parity = f"  (max |{args.format} - PyTorch| = {report[name]:.2g})" if name in report else ""
        print(f"{name}: {path}{parity}")
    return 0
