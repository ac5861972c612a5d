"""`xmkd predict`: every module has a predict_step and the writer turns it into files a user can read:
detection scores + Charades submission + segments in seconds, classifier top-k, XKD embeddings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.modules.test_classifier import export_tiny_encoder, video_batch
from tests.modules.test_detection import HEAD, collate, fake_videos
from tests.modules.test_xkd import TINY, TinyClips
from xmkd.modules.classifier import VideoClassifier
from xmkd.modules.detection import SingleStreamDetector
from xmkd.modules.xkd import XKDPretrainer
from xmkd.predict import (
    PredictionWriter,
    charades_submission_lines,
    class_names_for,
    detection_segments,
    mean_per_video,
    top_k,
    video_probabilities,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------- pure helpers


def test_detection_segments_are_in_seconds_with_class_names() -> None:
    scores = torch.zeros(10, 2)
    scores[2:5, 0] = torch.tensor([0.6, 0.8, 1.0])  # steps 2-4 of 10 over 5 s: 1.0 s to 2.5 s
    scores[8:, 1] = 0.9  # runs to the end: 4.0 s to 5.0 s
    segments = detection_segments(scores, 5.0, ["walk", "sit"], threshold=0.5)
    assert segments == [
        {"class_index": 0, "class_name": "walk", "start": 1.0, "end": 2.5, "score": 0.8},
        {"class_index": 1, "class_name": "sit", "start": 4.0, "end": 5.0, "score": 0.9},
    ]
    in_steps = detection_segments(scores, None, ["walk", "sit"])
    assert (in_steps[0]["start"], in_steps[0]["end"]) == (2.0, 5.0)


def test_charades_submission_has_25_numbered_lines_of_class_scores() -> None:
    scores = torch.arange(40, dtype=torch.float32).view(20, 2) / 40
    lines = charades_submission_lines("ABC12", scores)
    assert len(lines) == 25
    first, last = lines[0].split(), lines[-1].split()
    assert first[:2] == ["ABC12", "1"] and last[:2] == ["ABC12", "25"]
    # np.linspace(0, 19, 25) floored: first step 0, last step 19
    assert [float(v) for v in first[2:]] == [0.0, 1 / 40]
    assert [float(v) for v in last[2:]] == [38 / 40, 39 / 40]


def test_views_are_averaged_per_video_the_metric_way() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    ids = ["a", "a", "b"]
    videos, means, counts = mean_per_video(ids, logits)
    assert videos == ["a", "b"] and counts == [2, 1]
    torch.testing.assert_close(means, torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    _, soft, _ = video_probabilities(ids, logits, "softmax")
    _, by_scores, _ = video_probabilities(ids, logits, "scores")
    expected_a = (logits[0].softmax(-1) + logits[1].softmax(-1)).double() / 2
    torch.testing.assert_close(soft[0], expected_a)
    torch.testing.assert_close(by_scores[0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="softmax \\| scores"):
        video_probabilities(ids, logits, "max")


def test_top_k_and_class_names() -> None:
    probs = torch.tensor([0.1, 0.6, 0.3])
    best = top_k(probs, 2, ["a", "b", "c"])
    assert [b["class_name"] for b in best] == ["b", "c"]
    assert len(top_k(probs, 10, ["a", "b", "c"])) == 3
    assert class_names_for(2, ["only one"], ["x", "y"]) == ["x", "y"]
    assert class_names_for(2, None) == ["class 0", "class 1"]


# ---------------------------------------------------------------------------------- modules + writer


def predict(model: pl.LightningModule, loader: DataLoader, out: Path) -> PredictionWriter:
    writer = PredictionWriter(out, top_k=2)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[writer], default_root_dir=out.parent,
    )  # fmt: skip
    trainer.predict(model, loader, return_predictions=False)
    return writer


def test_detector_writes_scores_charades_file_and_segments(tmp_path: Path) -> None:
    torch.manual_seed(0)
    names = ["walk", "sit", "stand", "wave"]
    model = SingleStreamDetector(input_dim=6, class_names=names, **HEAD)
    videos = fake_videos()
    for v in videos:
        v.pop("labels")  # unlabelled: predict never reads labels
        v["labels"] = torch.zeros(len(v["features"]["rgb"]), 4)
    batches = [{**collate(videos[i : i + 3]), "duration": torch.tensor([3.0, 6.0, 9.0])} for i in (0, 3)]
    writer = predict(model, DataLoader(batches, batch_size=None), tmp_path / "predictions")
    assert sorted(p.name for p in writer.written) == [
        "charades_localize.txt",
        "frame_scores.npz",
        "segments.json",
    ]

    scores = np.load(tmp_path / "predictions" / "frame_scores.npz")
    assert sorted(scores.files) == [f"v{i}" for i in range(6)]
    assert scores["v1"].shape == (9, 4)  # the valid steps only (video 1 has 9 of the batch's 12)
    model.eval()
    with torch.no_grad():
        expected = model(batches[0])["logits"].sigmoid()[1, :9]
    np.testing.assert_allclose(scores["v1"], expected.numpy(), rtol=1e-6)

    lines = (tmp_path / "predictions" / "charades_localize.txt").read_text().splitlines()
    assert len(lines) == 6 * 25 and all(len(line.split()) == 2 + 4 for line in lines)

    segments = json.loads((tmp_path / "predictions" / "segments.json").read_text())
    assert segments["time_unit"] == "seconds" and segments["class_names"] == names
    v1 = segments["videos"]["v1"]
    assert v1["duration_s"] == 6.0 and v1["steps"] == 9
    found = [s for v in segments["videos"].values() for s in v["segments"]]
    assert found and all(s["class_name"] in names and 0 <= s["start"] < s["end"] for s in found)
    assert all(s["end"] <= segments["videos"][vid]["duration_s"] for vid in segments["videos"]
               for s in segments["videos"][vid]["segments"])  # fmt: skip


def test_classifier_writes_top_k_per_video(tmp_path: Path) -> None:
    model = VideoClassifier(str(export_tiny_encoder(tmp_path / "enc")), num_classes=3, mode="linear")
    batch = video_batch(4, classes=3)
    batch["video_id"] = ["a", "a", "b", "b"]  # two views per video
    batch["label"] = torch.tensor([2, 2, -1, -1])  # b is unlabelled
    predict(model, DataLoader([batch], batch_size=None), tmp_path / "predictions")
    result = json.loads((tmp_path / "predictions" / "topk.json").read_text())
    assert result["aggregate"] == "softmax" and result["k"] == 2
    a, b = result["videos"]
    assert (a["video_id"], a["views"], b["video_id"]) == ("a", 2, "b")
    assert a["label"] == {"class_index": 2, "class_name": "class 2"} and "label" not in b
    assert len(a["top"]) == 2 and a["top"][0]["probability"] >= a["top"][1]["probability"]
    model.eval()
    with torch.no_grad():
        probs = model(batch["video"][:2]).softmax(-1).mean(0)
    assert a["top"][0]["class_index"] == int(probs.argmax())
    assert a["top"][0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)


def test_xkd_writes_student_embeddings(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = XKDPretrainer(**TINY)
    data = TinyClips(4)
    items = [data[i] for i in range(4)]
    batch = {
        "video": torch.stack([x["video"] for x in items]),
        "audio": torch.stack([x["audio"] for x in items]),
        "label": torch.tensor([0, -1, 2, 2]),  # b unlabelled; c's two views share their label
        "video_id": ["a", "b", "c", "c"],
    }
    predict(model, DataLoader([batch], batch_size=None), tmp_path / "predictions")
    out = np.load(tmp_path / "predictions" / "embeddings.npz")
    assert list(out["video_id"]) == ["a", "b", "c"]
    assert out["video"].shape == (3, model.student["video"].dim) and out["audio"].shape[0] == 3
    model.eval()
    with torch.no_grad():
        expected = model.student["video"].patch_mean(batch["video"][:1])
    np.testing.assert_allclose(out["video"][0], expected[0].numpy(), rtol=1e-4, atol=1e-5)
    assert out["label"].tolist() == [0, -1, 2]


# ---------------------------------------------------------------------------------- through the CLI


def test_cli_predict_detection_on_an_unlabelled_charades_csv(tmp_path: Path, monkeypatch) -> None:
    """`xmkd predict` with the synthetic RGB config on a Charades test CSV without actions."""
    from xmkd.runner import run_lightning_cli

    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "experiments" / "detection" / "rgb_pdan_synthetic.yaml"
    tiny = [
        "--data.init_args.synthetic_videos=8", "--data.init_args.feature_root=data/synth-tiny",
        "--model.init_args.channels=8", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
    ]  # fmt: skip
    run_lightning_cli(["fit", "--config", str(config), "--trainer.max_epochs=1", *tiny])
    root = tmp_path / "data" / "synth-tiny"
    with (root / "Charades_v1_test.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (tmp_path / "unlabelled_test.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{**r, "actions": ""} for r in rows])
    ckpt = tmp_path / "runs" / "rgb_pdan_synthetic" / "version_0" / "checkpoints" / "last.ckpt"
    cli = run_lightning_cli(
        [
            "predict", "--config", str(config), *tiny, f"--ckpt_path={ckpt}",
            "--data.init_args.format=charades_csv", f"--data.init_args.annotations=[{tmp_path / 'unlabelled_test.csv'}]",
            "--data.init_args.eval_subset=testing", f"--data.init_args.classes_file={root / 'Charades_v1_classes.txt'}",
        ]
    )  # fmt: skip
    out = cli.run_dir / "predictions"
    segments = json.loads((out / "segments.json").read_text())
    assert sorted(segments["videos"]) == sorted(r["id"] for r in rows)
    assert segments["time_unit"] == "seconds"
    names = (root / "Charades_v1_classes.txt").read_text().splitlines()
    assert segments["class_names"] == [line.split(" ", 1)[1] for line in names]
    lines = (out / "charades_localize.txt").read_text().splitlines()
    assert len(lines) == 25 * len(rows)
