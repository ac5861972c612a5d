"""The bad-input suite: a folder of broken media made at test time, malformed annotations, non-finite
features and out-of-range labels each give an error naming the file (and line) or a counted skip;
a training epoch over a dataset with 10% broken files finishes under ``skip`` and reports them.

"Wrong fps metadata": PyAV's mp4 muxer recomputes the average rate from the timestamps, so the
stream cannot carry a lying ``avg_frame_rate``; we write a stream opened with ``rate=16`` whose
frames are 4 ticks apart in a 1/16 time base (the frames really are 4 per second, while the
encoder was told 16) and check that clips follow the timestamps, not the declared rate.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.data.media import (
    frame_index_of,
    index_frame,
    write_audio_only,
    write_garbage,
    write_one_frame_video,
    write_truncated,
    write_video,
    write_video_only,
    write_zero_byte,
)
from xmkd.data.datasets.bad_input import BadInputReport, TooManyBadInputsError, collate_with_failures
from xmkd.data.datasets.trimmed import TrimmedVideoDataset, UniformClipSampler
from xmkd.data.datasets.untrimmed import check_finite
from xmkd.data.readers.trimmed import ClipRecord, read_csv_annotations, read_ucf101
from xmkd.data.readers.untrimmed import read_pdan_json
from xmkd.errors import AnnotationError, BadInputError, FeatureError, MediaError, MissingAudioError


def write_wrong_fps(path: Path, num_frames: int = 8, declared: int = 16, ticks_per_frame: int = 4) -> Path:
    """Encoder told ``declared`` fps; frames stamped every ``ticks_per_frame`` ticks of 1/declared s."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=declared)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 32, 32), format="rgb24")
            frame.pts = i * ticks_per_frame
            frame.time_base = Fraction(1, declared)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("broken_media")
    return {
        "good_a": write_video(d / "good_a.mp4", num_frames=16, fps=16, size=32),
        "good_b": write_video(d / "good_b.mp4", num_frames=16, fps=16, size=32),
        "truncated": write_truncated(d / "truncated.mp4", num_frames=24, size=32),
        "truncated_faststart": write_truncated(
            d / "truncated_faststart.mp4", keep_fraction=0.3, faststart=True, num_frames=24, size=32
        ),
        "zero_bytes": write_zero_byte(d / "zero_bytes.mp4"),
        "garbage": write_garbage(d / "garbage.avi"),
        "audio_only": write_audio_only(d / "audio_only.mp4"),
        "video_only": write_video_only(d / "video_only.mp4", size=32),
        "one_frame": write_one_frame_video(d / "one_frame.mp4", size=32),
        "wrong_fps": write_wrong_fps(d / "wrong_fps.mp4"),
    }


def dataset(paths: list[Path], **kw) -> TrimmedVideoDataset:
    records = [ClipRecord(path=str(p), label=i, video_id=p.stem) for i, p in enumerate(paths)]
    kw = {"num_frames": 4, "fps": 16.0, "audio_seconds": 0.25, **kw}
    return TrimmedVideoDataset(records, UniformClipSampler(1), **kw)


# (kind, with_audio, error class, reason fragment)
BROKEN = [
    ("truncated", False, MediaError, "cannot open"),
    ("truncated_faststart", False, MediaError, ""),
    ("zero_bytes", False, MediaError, "empty file"),
    ("garbage", False, MediaError, "cannot open"),
    ("audio_only", False, MediaError, "no video stream"),
    ("video_only", True, MissingAudioError, "no audio stream"),
]


@pytest.mark.parametrize(("kind", "with_audio", "error", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_media_error_names_the_file(media, kind, with_audio, error, reason) -> None:
    with pytest.raises(error) as info:
        dataset([media[kind]], with_audio=with_audio)[0]
    assert info.value.path == str(media[kind])
    assert str(media[kind]) in str(info.value) and reason in info.value.reason


@pytest.mark.parametrize(("kind", "with_audio", "error", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_media_skip_is_replaced_and_counted(media, kind, with_audio, error, reason) -> None:
    ds = dataset([media["good_a"], media[kind], media["good_b"]], with_audio=with_audio, on_bad_input="skip")
    sample = ds[1]
    assert sample["video_id"] == "good_b" and sample["label"] == 2  # the next good video
    assert [f["path"] for f in sample["failures"]] == [str(media[kind])]
    assert reason in sample["failures"][0]["reason"]
    assert ds[0]["failures"] == [] and ds[0]["video_id"] == "good_a"


def clip_indices(video: torch.Tensor) -> list[int]:
    frames = (video.permute(1, 2, 3, 0) * 255).round().to(torch.uint8).numpy()
    return [frame_index_of(f) for f in frames]


def test_one_frame_video_is_loop_padded_or_rejected_by_min_duration(media) -> None:
    sample = dataset([media["one_frame"]])[0]
    assert clip_indices(sample["video"]) == [0, 0, 0, 0]  # valid, one frame repeated
    with pytest.raises(MediaError, match=r"one_frame\.mp4.*min_duration_s"):
        dataset([media["one_frame"]], min_duration_s=1.1)[0]


def test_wrong_fps_metadata_follows_timestamps(media) -> None:
    with av.open(str(media["wrong_fps"])) as container:
        stream = container.streams.video[0]
        assert stream.frames == 8 and float(stream.duration * stream.time_base) > 1.5  # 8 frames, ~2 s
    # 4 frames at 16 fps span 0.25 s = one source frame period (4 fps): at most 2 distinct frames,
    # in order; counting frames at the declared 16 fps would give 4 consecutive frames instead
    got = clip_indices(dataset([media["wrong_fps"]])[0]["video"])
    assert got == sorted(got) and len(set(got)) <= 2, got


# ------------------------------------------------------------------------------------ annotations


def test_csv_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text("path,label\na.mp4,0\nb.mp4\n")
    with pytest.raises(AnnotationError) as info:
        read_csv_annotations(csv, tmp_path)
    assert info.value.path == str(csv) and info.value.line == 3
    assert f"{csv}:3" in str(info.value)


def test_csv_empty_label_names_file_and_line(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text("path,label\na.mp4,jump\nb.mp4,\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:3: empty label"):
        read_csv_annotations(csv, tmp_path)


@pytest.mark.parametrize("header", ["video,class", "Filename,Category", "path,label"])
def test_csv_header_spellings_are_headers_not_videos(tmp_path: Path, header: str) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text(f"{header}\na.mp4,jump\nb.mp4,walk\n")
    ann = read_csv_annotations(csv, tmp_path)
    assert ann.class_names == ["jump", "walk"] and [r.video_id for r in ann.records] == ["a", "b"]


def test_csv_out_of_range_label_names_file_and_line(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text("a.mp4,0\nb.mp4,7\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:2: label 7 out of range 0\.\.2"):
        read_csv_annotations(csv, tmp_path, class_names=["x", "y", "z"])


def test_ucf_split_with_unknown_class_names_line(tmp_path: Path) -> None:
    splits = tmp_path / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (splits / "trainlist01.txt").write_text(
        "Archery/v_Archery_g01_c01.avi 2\nBowling/v_Bowling_g01_c01.avi 3\n"
    )
    (splits / "testlist01.txt").write_text("Archery/v_Archery_g02_c01.avi\n")
    with pytest.raises(AnnotationError) as info:
        read_ucf101(splits, tmp_path)
    assert info.value.path.endswith("trainlist01.txt") and info.value.line == 2


def test_pdan_json_malformed_and_out_of_range(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"v1": {"subset": "training", "duration": 3.0, "actions": [[0, 0.0')
    with pytest.raises(AnnotationError) as info:
        read_pdan_json(broken, num_classes=4)
    assert info.value.path == str(broken)
    bad_label = tmp_path / "labels.json"
    bad_label.write_text(
        json.dumps({"v1": {"subset": "training", "duration": 3.0, "actions": [[9, 0.0, 1.0]]}})
    )
    with pytest.raises(AnnotationError, match=r"labels\.json.*unknown class id 9 \(expected 0\.\.3\)"):
        read_pdan_json(bad_label, num_classes=4)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_the_file(tmp_path: Path, value: float) -> None:
    features = np.zeros((5, 3), dtype=np.float32)
    features[2, 1] = value
    with pytest.raises(FeatureError) as info:
        check_finite(features, tmp_path / "v1.npy")
    assert info.value.path == str(tmp_path / "v1.npy")
    check_finite(np.zeros((5, 3), dtype=np.float32), tmp_path / "ok.npy")  # finite: no error


# ----------------------------------------------------------- a training epoch with 10% broken files


class MeanPixel(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        x = batch["video"].mean(dim=(1, 2, 3, 4))[:, None]
        return (self.layer(x) - batch["label"][:, None].float()).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit_over(paths: list[Path], report: BadInputReport, root: Path) -> pl.Trainer:
    ds = dataset(paths, on_bad_input="skip")
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[report], default_root_dir=root,
    )  # fmt: skip
    trainer.fit(MeanPixel(), DataLoader(ds, batch_size=5, collate_fn=collate_with_failures))
    return trainer


def test_epoch_with_ten_percent_broken_finishes_and_reports(media, tmp_path: Path, capsys) -> None:
    paths = [media["good_a"], media["good_b"]] * 4 + [media["one_frame"], media["garbage"]]  # 1 of 10 bad
    report = BadInputReport(max_fraction=0.15, min_items=1)
    trainer = fit_over(paths, report, tmp_path)
    assert trainer.global_step == 2 and trainer.state.finished
    assert trainer.callback_metrics["bad_input/train"].item() == 1.0
    assert report.totals["train"] == 1
    assert f"1 bad input file(s) skipped:\n  {media['garbage']}" in capsys.readouterr().err


def test_epoch_with_too_many_broken_fails_with_the_list(media, tmp_path: Path) -> None:
    paths = [media["good_a"]] * 6 + [
        media["garbage"],
        media["zero_bytes"],
        media["truncated"],
        media["good_b"],
    ]
    # three consecutive bad files are walked past by three items (6 failure records): counted once
    # each, out of the split's 10 items (not 13 loads)
    with pytest.raises(TooManyBadInputsError, match=r"3 of 10 items were bad") as info:
        fit_over(paths, BadInputReport(max_fraction=0.1, min_items=1), tmp_path)
    assert "3 bad input file(s) skipped" in str(info.value) and str(media["zero_bytes"]) in str(info.value)


def test_bad_input_errors_are_value_errors_with_path() -> None:
    err = MediaError("/data/x.mp4", "empty file (0 bytes)")
    assert isinstance(err, BadInputError) and isinstance(err, ValueError)
    assert str(err) == "/data/x.mp4: empty file (0 bytes)"


# ----------------------------------------------------- evaluation: bad items dropped, never replaced
class CountVideos(pl.LightningModule):
    """Records the video ids its validation steps see."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def validation_step(self, batch, batch_idx):
        self.seen += list(batch["video_id"])


def eval_split(media, tmp_path: Path, **kw):
    """A test split of 6 videos of which a third are broken (garbage, cut-off mp4)."""
    from xmkd.data.datasets.trimmed import TrimmedVideoDataModule

    good = [write_video(tmp_path / f"g{i}.mp4", num_frames=16, fps=16, size=32) for i in range(4)]
    paths = [good[0], media["garbage"], good[1], good[2], media["truncated"], good[3]]
    (tmp_path / "test.csv").write_text("".join(f"{p},{i % 2}\n" for i, p in enumerate(paths)))
    (tmp_path / "train.csv").write_text("".join(f"{p},{i % 2}\n" for i, p in enumerate(good)))
    options = dict(
        dataset="csv", root="/", annotation=str(tmp_path / "train.csv"), test_annotation=str(tmp_path / "test.csv"),
        num_frames=4, fps=16.0, with_audio=False, eval_transform="none", test_clips=1, test_crops=1,
        batch_size=2, eval_batch_size=6, num_workers=0, on_bad_input="skip",
    )  # fmt: skip
    dm = TrimmedVideoDataModule(**{**options, **kw})
    dm.setup("validate")
    return dm, [p.with_suffix("").as_posix() for p in good]


@pytest.mark.parametrize("eval_batch_size", [6, 1])
def test_evaluation_drops_bad_items_and_counts_each_video_once(
    media, tmp_path: Path, eval_batch_size
) -> None:
    """Replacing a bad item by the next good one put one video into a 6-item batch several times
    and into the metrics as often; in evaluation a bad item is dropped and reported."""
    dm, good_ids = eval_split(media, tmp_path, eval_batch_size=eval_batch_size)
    batches = list(dm.val_dataloader())
    ids = [v for b in batches for v in b["video_id"]]
    assert sorted(ids) == sorted(good_ids)  # each good video exactly once
    assert sorted(f["path"] for b in batches for f in b["failures"]) == sorted(
        [str(media["garbage"]), str(media["truncated"])]
    )
    assert sum(b.get("dropped", 0) for b in batches) == 2


def test_evaluation_report_counts_the_splits_items(media, tmp_path: Path, capsys) -> None:
    dm, good_ids = eval_split(media, tmp_path)
    model, report = CountVideos(), BadInputReport(max_fraction=0.5, min_items=1)
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[report], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.validate(model, datamodule=dm)
    assert sorted(model.seen) == sorted(good_ids) and report.totals["validate"] == 2
    assert "(2 item(s) dropped, not replaced): 2 bad input file(s) skipped" in capsys.readouterr().err
    with pytest.raises(TooManyBadInputsError, match=r"validate: 2 of 6 items were bad"):
        trainer = pl.Trainer(
            accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[BadInputReport(max_fraction=0.1, min_items=1)],
            default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.validate(CountVideos(), datamodule=dm)
