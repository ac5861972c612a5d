"""TrimmedVideoDataset and its clip samplers over tiny real media written at test time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.data.media import frame_index_of, write_garbage, write_video
from xmkd.data.datasets.samplers import RandomClipSampler, UniformClipSampler
from xmkd.data.datasets.trimmed import (
    TrimmedVideoDataset,
    find_existing,
    loop_pad,
)
from xmkd.data.readers.trimmed import ClipRecord
from xmkd.errors import ConfigError, MediaError, MissingAudioError


def indices(video: torch.Tensor) -> list[int]:
    """Frame indices drawn into a float (C, T, H, W) clip by tests/data/media.py."""
    frames = (video.permute(1, 2, 3, 0) * 255).round().to(torch.uint8).numpy()
    return [frame_index_of(f) for f in frames]


def record(path: Path, label: int = 0, **kwargs) -> ClipRecord:
    return ClipRecord(path=str(path), label=label, video_id=path.stem, **kwargs)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        "a": write_video(d / "a.mp4", num_frames=32, fps=16, size=32),  # 2 s, with audio
        "b": write_video(d / "b.mp4", num_frames=32, fps=16, size=32),
        "short": write_video(d / "short.mp4", num_frames=5, fps=16, size=32),
        "mute": write_video(d / "mute.mp4", num_frames=32, fps=16, size=32, audio=False),
        "bad": write_garbage(d / "bad.mp4"),
    }


# ---------------------------------------------------------------------------------------------
# samplers and helpers (pure)


def test_loop_pad_and_find_existing(tmp_path: Path) -> None:
    x = torch.arange(3)
    assert loop_pad(x, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert loop_pad(torch.arange(9), 4).tolist() == [0, 1, 2, 3]
    (tmp_path / "f.mp4").write_bytes(b"x")
    (tmp_path / "d.mp4").mkdir()
    assert find_existing(
        [tmp_path / "f.mp4", tmp_path / "g.mp4", tmp_path / "d.mp4", tmp_path / "no/x.mp4"]
    ) == [
        True,
        False,
        False,
        False,
    ]


# ---------------------------------------------------------------------------------------------
# samples


def test_sample_dict_shapes_and_content(media) -> None:
    ds = TrimmedVideoDataset(
        [record(media["a"], 3)],
        UniformClipSampler(1),
        num_frames=8,
        fps=16,
        audio_seconds=0.5,
        with_audio=True,
    )
    assert len(ds) == 1
    s = ds[0]
    assert set(s) == {"video", "audio", "label", "video_id", "clip_index", "crop_index"}
    assert s["video"].shape == (3, 8, 32, 32) and s["video"].dtype == torch.float32
    assert s["video"].min() >= 0.0 and s["video"].max() <= 1.0
    assert s["audio"].shape == (8000,) and s["audio"].dtype == torch.float32
    assert s["audio"].abs().max() > 0.3  # the 440 Hz tone at amplitude 0.5
    assert (s["label"], s["video_id"], s["clip_index"]) == (3, "a", 0)
    # centre window of a 2 s video with a 0.5 s clip: starts at 0.75 s = frame 12
    assert indices(s["video"]) == list(range(12, 20))


def test_uniform_clips_are_the_expected_frames(media) -> None:
    ds = TrimmedVideoDataset([record(media["a"])], UniformClipSampler(3), num_frames=8, fps=16)
    assert [indices(ds[i]["video"]) for i in range(3)] == [
        list(range(0, 8)),
        list(range(12, 20)),
        list(range(24, 32)),
    ]


# The decode cache (xmkd.data.io.decode_cache) cuts clips from memory: same frames on the fps grid.
CACHE = pytest.mark.parametrize("cache_mb", [0, 8], ids=["decode-per-clip", "decode-cache"])


@CACHE
def test_fps_subsamples_in_time_order(media, cache_mb: int) -> None:
    ds = TrimmedVideoDataset(
        [record(media["a"])], UniformClipSampler(2), num_frames=4, fps=4, decode_cache_mb=cache_mb
    )
    assert [indices(ds[i]["video"]) for i in range(2)] == [[0, 4, 8, 12], [16, 20, 24, 28]]


@CACHE
def test_random_clip_is_a_contiguous_window(media, cache_mb: int) -> None:
    torch.manual_seed(1)
    ds = TrimmedVideoDataset(
        [record(media["a"])], RandomClipSampler(num_clips=4), num_frames=8, fps=16, decode_cache_mb=cache_mb
    )
    assert len(ds) == 4
    firsts = set()
    for i in range(4):
        idx = indices(ds[i]["video"])
        assert idx == list(range(idx[0], idx[0] + 8)) and idx[-1] <= 31
        firsts.add(idx[0])
    assert len(firsts) > 1


@CACHE
def test_record_bounds_restrict_the_clip(media, cache_mb: int) -> None:
    rec = record(media["a"], start_s=1.0, end_s=1.5)
    ds = TrimmedVideoDataset([rec], UniformClipSampler(2), num_frames=4, fps=16, decode_cache_mb=cache_mb)
    assert [indices(ds[i]["video"]) for i in range(2)] == [[16, 17, 18, 19], [20, 21, 22, 23]]


@CACHE
def test_short_video_is_loop_padded(media, cache_mb: int) -> None:
    ds = TrimmedVideoDataset(
        [record(media["short"])], UniformClipSampler(2), num_frames=8, fps=16, decode_cache_mb=cache_mb
    )
    for i in range(2):
        assert indices(ds[i]["video"]) == [0, 1, 2, 3, 4, 0, 1, 2]


def test_eval_expansion_clips_times_crops(media) -> None:
    calls = []

    def three_crops(clip: torch.Tensor, crop_index: int) -> dict[str, torch.Tensor]:
        calls.append(crop_index)
        w = clip.shape[2] // 2
        x0 = (0, w // 2, w)[crop_index]
        video = clip[:, :, x0 : x0 + w].permute(3, 0, 1, 2).float()
        return {"video": video, "crop_marker": torch.tensor(crop_index)}

    recs = [record(media["a"], 0), record(media["b"], 1)]
    ds = TrimmedVideoDataset(
        recs, UniformClipSampler(2), transform=three_crops, num_crops=3, num_frames=4, fps=16
    )
    assert len(ds) == 2 * 2 * 3
    views = [
        (s["video_id"], s["clip_index"], s["crop_index"], int(s["crop_marker"]))
        for s in (ds[i] for i in range(12))
    ]
    assert views == [(v, c, k, k) for v in ("a", "b") for c in range(2) for k in range(3)]
    assert calls == [k for _ in range(4) for k in range(3)]
    assert ds[5]["video"].shape == (3, 4, 32, 16)
    assert ds.locate(7) == (1, 0, 1)
    with pytest.raises(IndexError):
        ds[12]


def test_tensor_transform_becomes_video(media) -> None:
    ds = TrimmedVideoDataset(
        [record(media["a"])], UniformClipSampler(1), transform=lambda c: c[:, :8, :8].float(), num_frames=2
    )
    assert ds[0]["video"].shape == (2, 8, 8, 3)
    bad = TrimmedVideoDataset(
        [record(media["a"])], UniformClipSampler(1), transform=lambda c: {"x": c}, num_frames=2
    )
    with pytest.raises(ConfigError, match="without 'video'"):
        bad[0]


# ---------------------------------------------------------------------------------------------
# bad input policies


def test_missing_files_error_names_first_and_count(media, tmp_path: Path) -> None:
    recs = [record(media["a"]), record(tmp_path / "gone1.mp4"), record(tmp_path / "gone2.mp4")]
    with pytest.raises(MediaError) as info:
        TrimmedVideoDataset(recs, UniformClipSampler(1), num_frames=2)
    message = str(info.value)
    assert info.value.path == str(tmp_path / "gone1.mp4")
    assert "2 of 3 listed videos are missing" in message and "gone2.mp4" in message


def test_missing_files_skip_drops_and_reports(media, tmp_path: Path, caplog) -> None:
    recs = [record(media["a"]), record(tmp_path / "gone.mp4"), record(media["b"])]
    with caplog.at_level("WARNING"):
        ds = TrimmedVideoDataset(recs, UniformClipSampler(1), num_frames=2, missing="skip")
    assert [r.video_id for r in ds.records] == ["a", "b"]
    assert ds.missing_paths == [str(tmp_path / "gone.mp4")] and ds.listed == 3
    assert len(ds) == 2
    assert "1 of 3 listed videos are missing" in caplog.text


def test_missing_audio_policies(media) -> None:
    recs = [record(media["mute"], 1), record(media["a"], 2)]
    kw = dict(sampler=UniformClipSampler(1), num_frames=4, fps=16, with_audio=True, audio_seconds=0.25)
    with pytest.raises(MissingAudioError, match=r"mute.mp4: no audio stream"):
        TrimmedVideoDataset(recs, missing_audio="error", **kw)[0]
    silent = TrimmedVideoDataset(recs, missing_audio="silence", **kw)[0]
    assert silent["video_id"] == "mute" and silent["audio"].shape == (4000,) and not silent["audio"].any()
    assert "failures" not in silent
    skipped = TrimmedVideoDataset(recs, missing_audio="skip", **kw)[0]
    assert skipped["video_id"] == "a" and skipped["label"] == 2
    assert skipped["failures"] == [
        {"path": str(media["mute"]), "reason": "no audio stream (missing_audio=skip)"}
    ]
    # error + on_bad_input=skip: the missing track is a bad input like any other
    via_skip = TrimmedVideoDataset(recs, missing_audio="error", on_bad_input="skip", **kw)[0]
    assert via_skip["video_id"] == "a" and len(via_skip["failures"]) == 1


def test_bad_file_under_skip_is_replaced_and_counted(media) -> None:
    recs = [record(media["a"], 0), record(media["bad"], 1), record(media["b"], 2)]
    ds = TrimmedVideoDataset(recs, UniformClipSampler(1), num_frames=4, fps=16, on_bad_input="skip")
    samples = [ds[i] for i in range(len(ds))]
    assert [s["video_id"] for s in samples] == ["a", "b", "b"]
    assert [len(s["failures"]) for s in samples] == [0, 1, 0]
    failure = samples[1]["failures"][0]
    assert failure["path"] == str(media["bad"]) and failure["reason"]
    with pytest.raises(MediaError, match=r"bad.mp4"):
        TrimmedVideoDataset(recs, UniformClipSampler(1), num_frames=4, on_bad_input="error")[1]


def test_all_bad_gives_up_after_max_tries(media) -> None:
    recs = [record(media["bad"]), record(media["bad"].with_name("bad.mp4"))]
    ds = TrimmedVideoDataset(recs, UniformClipSampler(1), num_frames=4, on_bad_input="skip", max_tries=5)
    with pytest.raises(MediaError, match="2 consecutive videos failed"):
        ds[0]


def test_min_duration_is_bad_input(media) -> None:
    ds = TrimmedVideoDataset(
        [record(media["short"])], UniformClipSampler(1), num_frames=4, min_duration_s=1.1
    )
    with pytest.raises(MediaError, match=r"under min_duration_s=1\.1"):
        ds[0]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"missing_audio": "zeros"}, "missing_audio"),
        ({"missing": "ignore"}, "missing"),
        ({"on_bad_input": "warn"}, "on_bad_input"),
        ({"num_frames": 0}, "num_frames"),
        ({"fps": 0.0}, "fps"),
        ({"num_crops": 0}, "num_crops"),
    ],
)
def test_config_errors_name_the_key(kwargs, key) -> None:
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        TrimmedVideoDataset([], **kwargs)


# ---------------------------------------------------------------------------------------------
# DataModule


def ucf_style_tree(tmp_path: Path) -> tuple[Path, Path]:
    """Two classes, 4 train + 2 test tiny mp4s, listed in UCF101's official split format (CRLF)."""
    root, splits = tmp_path / "videos", tmp_path / "splits"
    splits.mkdir(parents=True)
    train, test = [], []
    for c, cls in enumerate(("Archery", "YoYo")):
        for g in range(3):
            rel = f"{cls}/v_{cls}_g0{g + 1}_c01.mp4"
            write_video(root / rel, num_frames=16, fps=8, size=40, audio=True)
            (test if g == 2 else train).append(rel if g == 2 else f"{rel} {c + 1}")
    (splits / "classInd.txt").write_bytes(b"1 Archery\r\n2 YoYo\r\n")
    (splits / "trainlist01.txt").write_bytes(("\r\n".join(train) + "\r\n").encode())
    (splits / "testlist01.txt").write_bytes(("\r\n".join(test) + "\r\n").encode())
    return root, splits


def test_datamodule_batches_with_workers(tmp_path: Path) -> None:
    from xmkd.data.datasets.trimmed import TrimmedVideoDataModule

    root, splits = ucf_style_tree(tmp_path)
    dm = TrimmedVideoDataModule(
        dataset="ucf101",
        root=str(root),
        splits=str(splits),
        num_frames=4,
        fps=8,
        audio_seconds=0.5,
        crop_size=32,
        local_crop_size=16,
        local_frames=2,
        test_clips=2,
        test_crops=3,
        batch_size=2,
        num_workers=2,
        on_bad_input="skip",
    )
    with pytest.raises(RuntimeError, match="after setup"):
        _ = dm.num_classes
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.num_classes, dm.class_names) == (2, ["Archery", "YoYo"])
    train = dm.train_dataloader()
    assert len(train) == 2  # 4 videos, batch 2, drop_last
    batch = next(iter(train))
    assert batch["video"].shape == (2, 3, 4, 32, 32)
    assert batch["video_local"].shape == (2, 1, 3, 2, 16, 16)
    assert batch["audio"].shape == (2, 8000)
    assert batch["label"].dtype == torch.int64 and set(batch["label"].tolist()) <= {0, 1}
    assert batch["failures"] == []
    val = dm.val_dataloader()
    assert len(val.dataset) == 2 * 2 * 3  # videos x clips x crops
    views = [
        (vid, c, k)
        for b in val
        for vid, c, k in zip(b["video_id"], b["clip_index"].tolist(), b["crop_index"].tolist())
    ]
    assert views == [
        (v, c, k) for v in ("v_Archery_g03_c01", "v_YoYo_g03_c01") for c in range(2) for k in range(3)
    ]
    assert next(iter(val))["video"].shape == (2, 3, 4, 32, 32)


def test_datamodule_signature_is_cli_friendly() -> None:
    from jsonargparse import ArgumentParser

    from xmkd.data.datasets.trimmed import TrimmedVideoDataModule

    parser = ArgumentParser()
    parser.add_class_arguments(TrimmedVideoDataModule, "data")
    cfg = parser.parse_args(
        ["--data.dataset=hmdb51", "--data.root=/x", "--data.splits=/s", "--data.fps=null"]
    )
    assert (cfg.data.dataset, cfg.data.fps, cfg.data.on_bad_input) == ("hmdb51", None, "error")
    # the dataset name is checked against the registry (open to new entries) when the module is built
    cfg = parser.parse_args(["--data.dataset=ucf", "--data.root=/x"])
    with pytest.raises(
        ConfigError,
        match=r"'dataset': must be one of ucf101 \| hmdb51 \| kinetics \| csv \| synthetic, got 'ucf'",
    ):
        TrimmedVideoDataModule(**cfg.data)


def test_datamodule_csv_and_kinetics_splits(tmp_path: Path) -> None:
    from xmkd.data.datasets.trimmed import TrimmedVideoDataModule

    (tmp_path / "train.csv").write_text("a.mp4,run\nb.mp4,jump\n")
    (tmp_path / "test.csv").write_text("c.mp4,run\n")
    dm = TrimmedVideoDataModule(
        dataset="csv", root=str(tmp_path), annotation=str(tmp_path / "train.csv"),
        test_annotation=str(tmp_path / "test.csv"), missing="skip",
    )  # fmt: skip
    # every training video is missing: an empty split is named with its cause, not left to a
    # sampler's "num_samples=0"
    with pytest.raises(
        ConfigError, match=r"the train split of csv is empty: all 2 listed videos are missing"
    ):
        dm.setup("fit")
    assert dm.class_names == ["jump", "run"]
    write_video(tmp_path / "x" / "C_000000_000010.mp4", num_frames=4, fps=4, size=16, audio=False)
    (tmp_path / "k.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nx,A,0,10,train\ny,B,0,10,train\nx,C,0,10,val\n"
    )
    dm = TrimmedVideoDataModule(
        dataset="kinetics", root=str(tmp_path), annotation=str(tmp_path / "k.csv"), missing="skip"
    )
    dm.setup("validate")
    assert dm.train_set is None and dm.eval_set.listed == 1 and dm.num_classes == 2
    with pytest.raises(ConfigError, match="config key 'root'"):
        TrimmedVideoDataModule(dataset="ucf101")
    with pytest.raises(ConfigError, match="config key 'splits'"):
        TrimmedVideoDataModule(dataset="hmdb51", root=str(tmp_path)).setup("fit")


def test_datamodule_linear_probe_view_comes_with_the_xkd_views(tmp_path: Path) -> None:
    from xmkd.data.datasets.trimmed import TrimmedVideoDataModule

    options = dict(classes=3, clips_per_class=4, duration=1.0, size=32, fps=8, workers=1)
    common = dict(
        root=str(tmp_path / "synth-av"), synthetic_options=options, num_frames=4, fps=8, crop_size=16,
        local_crop_size=8, local_frames=2, test_clips=1, test_crops=1, batch_size=2, num_workers=0,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"config key 'linear_probe_view'.*'finetune'"):
        TrimmedVideoDataModule(**common, train_transform="finetune", linear_probe_view=True)
    dm = TrimmedVideoDataModule(**common, linear_probe_view=True)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video_probe"].shape == batch["video"].shape == (2, 3, 4, 16, 16)
    assert batch["video_local"].shape == (2, 1, 3, 2, 8, 8)


def test_datamodule_synthetic_generates_and_reads_through_ucf_reader(tmp_path: Path) -> None:
    from xmkd.data.datasets.trimmed import TrimmedVideoDataModule

    root = tmp_path / "synth-av"
    options = dict(classes=3, clips_per_class=4, duration=1.0, size=32, fps=8, workers=1)
    dm = TrimmedVideoDataModule(
        root=str(root), synthetic_options=options, num_frames=4, fps=8, crop_size=16, local_crop_size=16,
        local_frames=2, test_clips=1, test_crops=1, batch_size=2, num_workers=0, train_transform="finetune",
    )  # fmt: skip
    dm.prepare_data()
    assert (root / "splits" / "trainlist01.txt").is_file()  # written on first use
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.class_names[0] == "HorizontalBounceSlow"
    train_lines = (root / "splits" / "trainlist01.txt").read_text().splitlines()
    assert dm.train_set.listed == len(train_lines) and not dm.train_set.missing_paths
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 3, 4, 16, 16) and batch["audio"].shape == (2, 8000)
    assert "failures" not in batch  # on_bad_input=error: nothing is skipped, nothing tracked
    assert len(dm.eval_set) == dm.eval_set.listed == 12 - len(train_lines)
    # the generator's Kinetics-style CSV lists the same clips
    kin = TrimmedVideoDataModule(
        dataset="kinetics", root=str(root / "videos"), annotation=str(root / "kinetics.csv"), test_crops=1
    )
    kin.setup("fit")
    assert sorted(kin.class_names) == sorted(dm.class_names)
    assert kin.train_set.listed + kin.eval_set.listed == 12 and not kin.train_set.missing_paths


def test_finetune_transform_knobs_reach_the_transform(tmp_path: Path) -> None:
    from torchvision.transforms import v2

    from xmkd.data.datasets.trimmed import TrimmedVideoDataModule

    common = dict(root=str(tmp_path / "none"), train_transform="finetune", crop_size=16)
    plain = TrimmedVideoDataModule(**common, randaug_num_ops=0, erase_p=0.0)._train_transform()
    assert not any(isinstance(t, v2.RandAugment) for t in plain.geometric.transforms) and plain.erase is None
    recipe = TrimmedVideoDataModule(**common)._train_transform()  # the fine-tuning recipe's defaults
    (randaug,) = [t for t in recipe.geometric.transforms if isinstance(t, v2.RandAugment)]
    assert (randaug.num_ops, randaug.magnitude, recipe.erase.p) == (4, 7, 0.25)
    with pytest.raises(ConfigError, match="erase_p"):
        TrimmedVideoDataModule(**common, erase_p=1.5)
    with pytest.raises(ConfigError, match="randaug_num_ops"):
        TrimmedVideoDataModule(**common, randaug_num_ops=-1)


def test_datamodule_predicts_on_an_unlabelled_test_csv_and_refuses_it_for_testing(tmp_path: Path) -> None:
    """The official Kinetics test CSV (no label column) serves predict; test and fit say why not."""
    from xmkd.data.datasets.trimmed import TrimmedVideoDataModule

    for name, folder in (("A_000000_000010", "run"), ("B_000000_000010", "jump")):
        write_video(tmp_path / folder / f"{name}.mp4", num_frames=8, fps=8, size=16, audio=False)
    for name in ("C_000004_000014", "D_000001_000011"):
        write_video(tmp_path / "test" / f"{name}.mp4", num_frames=8, fps=8, size=16, audio=False)
    (tmp_path / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nrun,A,0,10,train\njump,B,0,10,train\n"
    )
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\nC,4,14,test\nD,1,11,test\n")
    options = dict(
        dataset="kinetics", root=str(tmp_path), annotation=str(tmp_path / "train.csv"),
        num_frames=2, fps=8.0, with_audio=False, train_transform="none", eval_transform="none",
        test_clips=1, test_crops=1, batch_size=2, eval_batch_size=2, num_workers=0,
    )  # fmt: skip
    test_root = str(tmp_path / "test")
    dm = TrimmedVideoDataModule(**{**options, "root": test_root}, test_annotation=str(tmp_path / "test.csv"))
    dm.setup("predict")
    assert dm.class_names == ["jump", "run"]
    batch = next(iter(dm.predict_dataloader()))
    assert batch["video_id"] == ["C_000004_000014", "D_000001_000011"] and batch["label"].tolist() == [-1, -1]
    for stage in ("test", "fit"):
        dm = TrimmedVideoDataModule(**options, test_annotation=str(tmp_path / "test.csv"))
        with pytest.raises(ConfigError, match=r"'test_annotation': .*test\.csv has no labels .*predict"):
            dm.setup(stage)
