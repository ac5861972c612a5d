"""`xmkd export --ckpt --out`: encoders of an XKD checkpoint, the RGB student of a detection one (as a
checkpoint, or ONNX / TorchScript checked against PyTorch); and fine-tuning straight from an XKD
Lightning checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning
import pytest
import torch

from tests.modules.test_detection import D_FLOW, D_RGB, HEAD, collate, fake_videos
from tests.modules.test_xkd import TINY
from xmkd.cli import main
from xmkd.errors import ConfigError
from xmkd.export import check_exported, export_checkpoint, export_torchscript
from xmkd.models.vit import load_exported_encoder
from xmkd.modules.classifier import VideoClassifier
from xmkd.modules.detection import AugmentedRGBStudent, SingleStreamDetector, TwoStreamTeacher
from xmkd.modules.xkd import XKDPretrainer

pytestmark = pytest.mark.usefixtures("one_thread")


def save(model: lightning.LightningModule, path: Path, class_path: str | None = None) -> Path:
    """A checkpoint as Lightning writes one (LightningCLI adds the class path and instantiator)."""
    hparams = dict(model.hparams)
    if class_path:
        hparams = {
            "_class_path": class_path,
            **hparams,
            "_instantiator": "lightning.pytorch.cli.instantiate_module",
        }
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": lightning.__version__},
        path,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def xkd_ckpt(tmp_path_factory) -> tuple[Path, XKDPretrainer]:
    torch.manual_seed(0)
    model = XKDPretrainer(**TINY)
    with torch.no_grad():  # students and teachers differ, as after training
        for p in model.student.parameters():
            p.add_(0.01)
    path = tmp_path_factory.mktemp("xkd") / "last.ckpt"
    return save(model, path, "xmkd.modules.xkd.XKDPretrainer"), model


def test_export_writes_the_encoders_of_an_xkd_checkpoint(xkd_ckpt, tmp_path: Path, capsys) -> None:
    path, model = xkd_ckpt
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "enc")]) == 0
    assert "student_video" in capsys.readouterr().out
    for role, encoders in (("student", model.student), ("teacher", model.teacher)):
        for m in ("video", "audio"):
            encoder = load_exported_encoder(tmp_path / "enc" / f"{role}_{m}.pt")
            for k, v in encoders[m].state_dict().items():
                torch.testing.assert_close(encoder.state_dict()[k], v, msg=f"{role}_{m}.{k}")
    assert (tmp_path / "enc" / "encoders.json").is_file()


def test_finetuning_takes_an_xkd_lightning_checkpoint(xkd_ckpt) -> None:
    path, model = xkd_ckpt
    classifier = VideoClassifier(str(path), num_classes=3, mode="finetune", drop_path=0.2)
    assert classifier.encoder.blocks[-1].drop_path.p == pytest.approx(0.2)
    for k, v in model.student["video"].state_dict().items():
        torch.testing.assert_close(classifier.encoder.state_dict()[k], v)
    audio = VideoClassifier(str(path), num_classes=3, mode="linear", encoder_key="teacher_audio")
    assert audio.modality == "audio"
    torch.testing.assert_close(audio.encoder.patch_embed.weight, model.teacher["audio"].patch_embed.weight)
    with pytest.raises(ConfigError, match="encoder_key"):
        VideoClassifier(str(path), num_classes=3, encoder_key="student_flow")


@pytest.fixture(scope="module")
def detection_ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("det")
    torch.manual_seed(0)
    teacher = TwoStreamTeacher(aux_modality="flow", rgb_dim=D_RGB, aux_dim=D_FLOW, **HEAD)
    teacher_path = save(teacher, root / "teacher.ckpt", "xmkd.modules.detection.TwoStreamTeacher")
    student = AugmentedRGBStudent(teacher_checkpoint=str(teacher_path), rgb_dim=D_RGB, **HEAD)
    return {
        "teacher": teacher_path,
        "student": save(student, root / "student.ckpt", "xmkd.modules.detection.AugmentedRGBStudent"),
        "student_no_class_path": save(student, root / "student_plain.ckpt"),
    }


@pytest.mark.parametrize("which", ["student", "student_no_class_path"])
def test_export_turns_the_student_into_an_rgb_detector(detection_ckpts, which: str, tmp_path: Path) -> None:
    assert main(["export", "--ckpt", str(detection_ckpts[which]), "--out", str(tmp_path)]) == 0
    student = AugmentedRGBStudent.load_from_checkpoint(detection_ckpts["student"], map_location="cpu")
    detector = SingleStreamDetector.load_from_checkpoint(tmp_path / "rgb_student.ckpt", map_location="cpu")
    detection_ckpts["teacher"].rename(detection_ckpts["teacher"].with_suffix(".moved"))  # not needed any more
    try:
        again = SingleStreamDetector.load_from_checkpoint(tmp_path / "rgb_student.ckpt", map_location="cpu")
    finally:
        detection_ckpts["teacher"].with_suffix(".moved").rename(detection_ckpts["teacher"])
    assert again.hparams.modality == "rgb" and again.hparams.input_dim == D_RGB
    batch = collate(fake_videos()[:3])
    student.eval(), detector.eval()
    with torch.no_grad():
        torch.testing.assert_close(detector(batch)["logits"], student(batch)["logits"])


def test_export_refuses_a_teacher_naming_it(detection_ckpts, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TwoStreamTeacher"):
        main(["export", "--ckpt", str(detection_ckpts["teacher"]), "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="not found"):
        main(["export", "--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path)])
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(detection_ckpts["student"].read_bytes()[:2000])
    with pytest.raises(ConfigError, match=r"truncated\.ckpt is not a readable checkpoint"):
        main(["export", "--ckpt", str(truncated), "--out", str(tmp_path / "out")])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match=r"a_file exists and is not a folder"):
        main(["export", "--ckpt", str(detection_ckpts["student"]), "--out", str(tmp_path / "a_file")])
    assert not (tmp_path / "out").exists()  # nothing written for a refused checkpoint


# --- `--format onnx | torchscript`: the RGB student as a graph -------------------------------------
ORT_MISSING = "onnx export needs onnx, onnxscript and onnxruntime (pip install 'xmkd[export]')"


def student_logits(ckpt: Path, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The distilled student's own logits (the Lightning module, teacher loaded) on a batch."""
    student = AugmentedRGBStudent.load_from_checkpoint(ckpt, map_location="cpu").eval()
    with torch.no_grad():
        return student({"features": {"rgb": features}, "mask": mask})["logits"]


def padded_batch(steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three videos of ``steps``, ``steps // 2`` and 1 steps, padded with garbage (not zeros)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(steps)[None] < torch.tensor([steps, max(1, steps // 2), 1])[:, None]
    return torch.randn(3, steps, D_RGB, generator=g) * 3, mask


# lengths: below PDAN's dilations, the exporter's example length (24) and well above it
STEPS = (3, 24, 61)


@pytest.fixture(scope="module")
def onnx_student(detection_ckpts, tmp_path_factory) -> Path:
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason=ORT_MISSING)
    out = tmp_path_factory.mktemp("onnx")
    assert (
        main(["export", "--ckpt", str(detection_ckpts["student"]), "--out", str(out), "--format", "onnx"])
        == 0
    )
    return out / "rgb_student.onnx"


def test_onnx_student_matches_pytorch_on_onnxruntime_for_any_length(onnx_student, detection_ckpts) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_student), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features", "mask"]
    for steps in STEPS:
        features, mask = padded_batch(steps, seed=steps)
        (got,) = session.run(["logits"], {"features": features.numpy(), "mask": mask.numpy()})
        expected = student_logits(detection_ckpts["student"], features, mask)
        assert got.shape == (3, steps, expected.shape[-1])
        assert float((torch.from_numpy(got) - expected).abs().max()) < 1e-4, steps


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_torchscript_student_matches_pytorch_for_any_length(detection_ckpts, tmp_path: Path, capsys) -> None:
    args = ["export", "--ckpt", str(detection_ckpts["student"]), "--out", str(tmp_path), "--format", "torchscript"]  # fmt: skip
    assert main(args) == 0
    assert "max |torchscript - PyTorch|" in capsys.readouterr().out
    module = torch.jit.load(str(tmp_path / "rgb_student.torchscript.pt"))
    for steps in STEPS:
        features, mask = padded_batch(steps, seed=steps)
        with torch.no_grad():
            got = module(features, mask)
        torch.testing.assert_close(
            got, student_logits(detection_ckpts["student"], features, mask), atol=1e-4, rtol=0
        )


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_parity_check_refuses_an_export_of_other_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    exported = SingleStreamDetector(input_dim=D_RGB, **HEAD).head
    other = SingleStreamDetector(input_dim=D_RGB, **HEAD).head
    path = export_torchscript(exported, tmp_path / "head.pt", D_RGB)
    assert check_exported("torchscript", path, exported, D_RGB) < 1e-5
    with pytest.raises(ConfigError, match=r"head\.pt: max \|torchscript - PyTorch\|"):
        check_exported("torchscript", path, other, D_RGB)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_graph_formats_refuse_checkpoints_without_an_rgb_detector(
    detection_ckpts, xkd_ckpt, fmt: str, tmp_path: Path
) -> None:
    for path, kind in ((detection_ckpts["teacher"], "TwoStreamTeacher"), (xkd_ckpt[0], "XKDPretrainer")):
        with pytest.raises(ConfigError, match=f"{kind}.*--format {fmt} takes"):
            export_checkpoint(path, tmp_path, fmt)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_onnx_without_its_packages_says_what_to_install(detection_ckpts, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ModuleNotFoundError
    with pytest.raises(ConfigError, match=r"pip install 'xmkd\[export\]'"):
        export_checkpoint(detection_ckpts["student"], tmp_path, "onnx")
