"""Labels at feature resolution, feature loading/alignment, the dataset, collate and data module."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmkd.data.datasets.untrimmed import (
    UntrimmedFeatureDataset,
    UntrimmedVideoDataModule,
    collate_untrimmed,
    frame_labels,
    gather_resampled,
    label_stats,
    open_features,
    resample_positions,
)
from xmkd.data.readers.untrimmed import Segment, UntrimmedAnnotations, UntrimmedVideo
from xmkd.errors import ConfigError, FeatureError


def loop_labels(segments, num_steps, duration, num_classes):
    """The PDAN dataloader's loop, written out: the independent reference."""
    fps = num_steps / duration
    out = np.zeros((num_steps, num_classes), dtype=np.float32)
    for seg in segments:
        for t in range(num_steps):
            if seg.start_s < t / fps < seg.end_s:
                out[t, seg.label] = 1
    return out


def test_labels_match_reference_loop_on_random_segments():
    rng = np.random.default_rng(0)
    for _ in range(30):
        t_len, duration = int(rng.integers(1, 80)), float(rng.uniform(1, 60))
        segs = [
            Segment(int(rng.integers(5)), round(s, 1), round(s + float(rng.uniform(-1, 30)), 1))
            for s in rng.uniform(0, 70, size=int(rng.integers(0, 6)))
        ]
        np.testing.assert_array_equal(
            frame_labels(segs, t_len, duration, 5), loop_labels(segs, t_len, duration, 5)
        )


def test_labels_edge_cases():
    # T = 10 over 10 s: step t is at t seconds
    on = lambda segs: frame_labels(segs, 10, 10.0, 2)[:, 0].nonzero()[0].tolist()  # noqa: E731
    assert on([Segment(0, 2.0, 5.0)]) == [3, 4]  # boundaries strictly exclusive
    assert on([Segment(0, 0.0, 1.5)]) == [1]  # t = 0 is never inside (0 < 0 is false)
    assert on([Segment(0, 7.5, 40.0)]) == [8, 9]  # past the end: clipped
    assert on([Segment(0, 10.0, 12.0)]) == []  # entirely outside
    assert on([Segment(0, 3.0, 3.0)]) == [] and on([Segment(0, 4.0, 3.0)]) == []  # zero / negative length
    assert frame_labels([], 10, 10.0, 2).sum() == 0 and frame_labels([], 0, 10.0, 2).shape == (0, 2)
    # a fixed feature rate replaces T / duration
    assert frame_labels([Segment(1, 2.0, 5.0)], 10, 99.0, 2, feature_fps=1.0)[:, 1].nonzero()[0].tolist() == [
        3,
        4,
    ]


def test_label_stats_counts_what_the_rule_did():
    video = UntrimmedVideo(
        "v",
        "training",
        10.0,
        None,
        [Segment(0, 1, 2), Segment(0, 8, 12), Segment(1, 10, 11), Segment(1, 3, 3)],
    )
    s = label_stats(video)
    assert (s.segments, s.clipped, s.outside, s.zero_length, s.empty_videos) == (4, 1, 1, 1, 0)
    assert label_stats(UntrimmedVideo("e", "training", 5.0, None, [])).empty_videos == 1


@pytest.mark.parametrize(("src", "dst"), [(7, 20), (20, 7), (5, 5), (1, 4), (33, 32)])
def test_resample_matches_torch_interpolate(src, dst):
    x = np.random.default_rng(src).standard_normal((src, 3)).astype(np.float32)
    ours = gather_resampled(x, resample_positions(src, dst))
    ref = F.interpolate(torch.from_numpy(x.T.copy())[None], size=dst, mode="linear", align_corners=False)[0].T
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5)
    # a window of positions (a training crop) reads only its rows and gives the same values
    np.testing.assert_allclose(gather_resampled(x, resample_positions(src, dst)[2:5]), ours[2:5], atol=1e-6)


# ---------------------------------------------------------------------------------------- fixtures
def make_world(root: Path, lengths: dict[str, int], flow_lengths: dict[str, int] | None = None, dim: int = 4):
    videos = []
    for i, (vid, t_len) in enumerate(lengths.items()):
        for modality, n in (("rgb", t_len), ("flow", (flow_lengths or {}).get(vid, t_len))):
            (root / modality).mkdir(parents=True, exist_ok=True)
            # feature value = step index in column 0: lets tests recover crop offsets
            arr = np.zeros((n, dim), dtype=np.float32)
            arr[:, 0] = np.arange(n)
            arr[:, 1] = i
            np.save(root / modality / f"{vid}.npy", arr)
        videos.append(UntrimmedVideo(vid, "training", float(t_len), None, [Segment(i % 3, 2.0, t_len / 2)]))
    return UntrimmedAnnotations(videos, ["a", "b", "c"], source="test")


def test_eval_gives_whole_sequences_with_labels(tmp_path):
    ann = make_world(tmp_path, {"v0": 12, "v1": 30})
    ds = UntrimmedFeatureDataset(ann, tmp_path, ["rgb", "flow"], max_len=8, train=False)
    s = ds[1]
    assert s["features"]["rgb"].shape == (30, 4) and s["features"]["flow"].dtype == torch.float32
    assert (
        s["labels"].shape == (30, 3) and s["mask"].all() and s["video_id"] == "v1" and s["duration"] == 30.0
    )
    np.testing.assert_array_equal(s["labels"].numpy(), loop_labels(ann.videos[1].segments, 30, 30.0, 3))
    assert "failures" not in s


def test_train_crop_is_random_and_labels_follow(tmp_path):
    ann = make_world(tmp_path, {"v0": 50})
    ds = UntrimmedFeatureDataset(
        ann, tmp_path, ["rgb", "flow"], max_len=8, train=True, generator=torch.Generator().manual_seed(0)
    )
    full = frame_labels(ann.videos[0].segments, 50, 50.0, 3)
    starts = set()
    for _ in range(10):
        s = ds[0]
        start = int(s["features"]["rgb"][0, 0])
        starts.add(start)
        assert s["features"]["rgb"].shape == (8, 4)
        np.testing.assert_array_equal(s["features"]["rgb"][:, 0].numpy(), np.arange(start, start + 8))
        np.testing.assert_array_equal(s["labels"].numpy(), full[start : start + 8])
    assert len(starts) > 1
    assert UntrimmedFeatureDataset(ann, tmp_path, ["rgb"], max_len=80, train=True)[0]["labels"].shape[0] == 50


def test_4d_features_accepted(tmp_path):
    ann = make_world(tmp_path, {"v0": 6})
    np.save(tmp_path / "rgb" / "v0.npy", np.ones((6, 1, 1, 5), dtype=np.float32))
    assert UntrimmedFeatureDataset(ann, tmp_path, ["rgb"])[0]["features"]["rgb"].shape == (6, 5)


def test_alignment_resample_and_error(tmp_path):
    ann = make_world(tmp_path, {"v0": 20}, flow_lengths={"v0": 10})
    s = UntrimmedFeatureDataset(ann, tmp_path, ["rgb", "flow"], align="resample")[0]
    assert s["features"]["flow"].shape == (20, 4) and s["labels"].shape == (20, 3)
    ref = F.interpolate(torch.arange(10.0)[None, None], size=20, mode="linear", align_corners=False)[0, 0]
    torch.testing.assert_close(s["features"]["flow"][:, 0], ref)
    with pytest.raises(FeatureError, match=r"flow/v0\.npy: 10 steps but rgb has 20"):
        UntrimmedFeatureDataset(ann, tmp_path, ["rgb", "flow"], align="error")[0]
    # a training crop of a resampled modality lines up with the same crop of the full resample
    crop = UntrimmedFeatureDataset(
        ann, tmp_path, ["rgb", "flow"], max_len=6, train=True, generator=torch.Generator().manual_seed(3)
    )[0]
    start = int(crop["features"]["rgb"][0, 0])
    torch.testing.assert_close(crop["features"]["flow"], s["features"]["flow"][start : start + 6])


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (lambda p: p.unlink(), "feature file not found"),
        (lambda p: np.save(p, np.zeros((3, 2, 4), dtype=np.float32)), r"expected shape \(T, D\)"),
        (lambda p: p.write_bytes(b"not numpy"), "not a readable .npy"),
        (lambda p: np.save(p, np.zeros((5, 4), dtype=np.int64)), "floating-point"),
    ],
)
def test_bad_feature_files_name_the_file(tmp_path, breakage, reason):
    ann = make_world(tmp_path, {"v0": 5, "v1": 5})
    breakage(tmp_path / "flow" / "v0.npy")
    with pytest.raises(FeatureError, match=reason) as err:
        UntrimmedFeatureDataset(ann, tmp_path, ["rgb", "flow"])[0]
    assert err.value.path.endswith("flow/v0.npy")
    # under skip the next good video replaces it and the failure travels with the sample
    s = UntrimmedFeatureDataset(ann, tmp_path, ["rgb", "flow"], on_bad_input="skip")[0]
    assert s["video_id"] == "v1"
    assert len(s["failures"]) == 1 and s["failures"][0]["path"].endswith("flow/v0.npy")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_features_policy(tmp_path, value):
    ann = make_world(tmp_path, {"v0": 5, "v1": 5, "v2": 5, "v3": 5})
    arr = np.zeros((5, 4), dtype=np.float32)
    arr[3, 2] = value
    np.save(tmp_path / "rgb" / "v1.npy", arr)
    (tmp_path / "rgb" / "v3.npy").unlink()
    kind = "NaN" if np.isnan(value) else "Inf"
    with pytest.raises(FeatureError, match=f"rgb/v1.npy: {kind} in features .*first at step 3"):
        UntrimmedFeatureDataset(ann, tmp_path, ["rgb"])[1]
    # nonfinite=skip while other bad input is fatal
    ds = UntrimmedFeatureDataset(ann, tmp_path, ["rgb"], nonfinite="skip")
    s = ds[1]
    assert s["video_id"] == "v2" and s["failures"][0]["reason"].startswith(kind)
    with pytest.raises(FeatureError, match="not found"):
        ds[3]
    # and the opposite: skip missing files, fail on NaN/Inf
    ds = UntrimmedFeatureDataset(ann, tmp_path, ["rgb"], on_bad_input="skip", nonfinite="error")
    s = ds[3]
    assert s["video_id"] == "v0" and s["failures"][0]["reason"] == "feature file not found"
    with pytest.raises(FeatureError, match=kind):
        ds[1]


def test_feature_error_survives_pickling_to_main_process(tmp_path):
    ann = make_world(tmp_path, {"v0": 5})
    np.save(tmp_path / "rgb" / "v0.npy", np.full((5, 4), np.nan, dtype=np.float32))
    with pytest.raises(FeatureError) as err:
        UntrimmedFeatureDataset(ann, tmp_path, ["rgb"])[0]
    back = pickle.loads(pickle.dumps(err.value))
    assert type(back) is type(err.value) and back.path == err.value.path and back.reason == err.value.reason


def test_open_features_memory_maps(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((4, 3), dtype=np.float16))
    assert isinstance(open_features(tmp_path / "x.npy"), np.memmap)


def test_collate_pads_and_masks(tmp_path):
    ann = make_world(tmp_path, {"v0": 3, "v1": 7})
    ds = UntrimmedFeatureDataset(ann, tmp_path, ["rgb", "flow"], on_bad_input="skip")
    batch = collate_untrimmed([ds[0], ds[1]])
    assert batch["features"]["rgb"].shape == (2, 7, 4) and batch["labels"].shape == (2, 7, 3)
    assert batch["mask"].tolist() == [[True] * 3 + [False] * 4, [True] * 7]
    assert batch["features"]["flow"][0, 3:].abs().sum() == 0 and batch["labels"][0, 3:].sum() == 0
    torch.testing.assert_close(batch["features"]["rgb"][1], ds[1]["features"]["rgb"])
    assert batch["video_id"] == ["v0", "v1"] and batch["failures"] == []
    assert batch["duration"].tolist() == [3.0, 7.0]


def test_config_errors_name_the_key(tmp_path):
    ann = make_world(tmp_path, {"v0": 3})
    for kwargs, key in [
        ({"align": "nearest"}, "align"),
        ({"subset": "testing"}, "subset"),
        ({"max_len": 0}, "max_len"),
        ({"modalities": []}, "modalities"),
    ]:
        with pytest.raises(ConfigError, match=f"config key '{key}'"):
            UntrimmedFeatureDataset(ann, tmp_path, **{"modalities": ["rgb"], **kwargs})
    ann.videos[0].duration_estimated = True
    with pytest.raises(ConfigError, match="feature_fps"):
        UntrimmedFeatureDataset(ann, tmp_path, ["rgb"])


def test_datamodule_synthetic_and_charades_csv(tmp_path):
    root = tmp_path / "synth"
    dm = UntrimmedVideoDataModule(
        feature_root=str(root), max_len=16, batch_size=4, synthetic_videos=10, synthetic_classes=5
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 5 and dm.feature_dims == {"rgb": 64, "flow": 64}
    batch = next(iter(dm.train_dataloader()))
    assert batch["features"]["rgb"].shape == (4, 16, 64) and batch["labels"].shape == (4, 16, 5)
    val = next(iter(dm.val_dataloader()))
    # evaluation keeps whole videos: each mask covers its video's feature steps, padding after
    steps = [len(np.load(root / "rgb" / f"{v}.npy")) for v in val["video_id"]]
    assert val["mask"].sum(1).tolist() == steps and val["mask"].shape[1] == max(steps)
    assert all(bool(row[:n].all()) for row, n in zip(val["mask"], steps))
    assert val["features"]["flow"].shape[1] == val["mask"].sum(1).max()
    # the same world through its Charades CSVs gives the same labels
    csv_dm = UntrimmedVideoDataModule(
        format="charades_csv",
        annotations=[str(root / "Charades_v1_train.csv"), str(root / "Charades_v1_test.csv")],
        classes_file=str(root / "Charades_v1_classes.txt"),
        feature_root=str(root),
        modalities=["rgb"],
        batch_size=2,
    )
    csv_dm.setup("test")
    a, b = csv_dm.eval_set[0], dm.eval_set[0]
    assert a["video_id"] == b["video_id"]
    torch.testing.assert_close(a["labels"], b["labels"])
    with pytest.raises(ConfigError, match="feature_root"):
        UntrimmedVideoDataModule(format="pdan_json", annotations=["x.json"])


def write_pdan_world(root: Path, train: int = 2, test: int = 6) -> Path:
    """Feature files and a PDAN JSON: ``train`` training videos, ``test`` testing videos."""
    videos = [(f"a{i}", "training") for i in range(train)] + [(f"t{i}", "testing") for i in range(test)]
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    data = {}
    for i, (vid, subset) in enumerate(videos):
        np.save(root / "rgb" / f"{vid}.npy", np.full((8, 4), float(i), dtype=np.float32))
        data[vid] = {"subset": subset, "duration": 8.0, "actions": [[i % 3, 1.0, 4.0]]}
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path


def untrimmed_module(root: Path, ann: Path, **kw) -> UntrimmedVideoDataModule:
    options = dict(
        format="pdan_json", annotations=[str(ann)], feature_root=str(root), modalities=["rgb"],
        num_classes=3, batch_size=6, max_len=None, on_bad_input="skip",
    )  # fmt: skip
    return UntrimmedVideoDataModule(**{**options, **kw})


def test_missing_feature_files_are_dropped_up_front_or_named(tmp_path, caplog):
    ann = write_pdan_world(tmp_path)
    (tmp_path / "rgb" / "t1.npy").unlink()
    with pytest.raises(
        FeatureError, match=r"rgb/t1\.npy: 1 feature file\(s\) missing, for 1 of the 6 videos .*missing: skip"
    ):
        untrimmed_module(tmp_path, ann).setup("validate")
    dm = untrimmed_module(tmp_path, ann, missing="skip")
    with caplog.at_level("WARNING", logger="xmkd.data.datasets.untrimmed"):
        dm.setup("validate")
    assert [v.video_id for v in dm.eval_set.videos] == ["t0", "t2", "t3", "t4", "t5"]
    assert dm.eval_set.missing_paths == [str(tmp_path / "rgb" / "t1.npy")]
    assert "1 of 6 videos of subset 'testing' have missing feature files" in caplog.text
    # a split emptied by missing: skip is named, with the cause (not a sampler's num_samples=0)
    for vid in ("a0", "a1"):
        (tmp_path / "rgb" / f"{vid}.npy").unlink()
    with pytest.raises(ConfigError, match=r"subset 'training' is empty: the feature files of all 2"):
        untrimmed_module(tmp_path, ann, missing="skip").setup("fit")
    # a modality without its folder is named as such, whatever the policy
    with pytest.raises(ConfigError, match=rf"config key 'modalities': no folder {tmp_path / 'pose'} for"):
        untrimmed_module(tmp_path, ann, modalities=["rgb", "pose"], missing="skip").setup("validate")


def test_evaluation_drops_bad_videos_instead_of_repeating_the_next(tmp_path):
    """A third of the test videos broken: each good video once in the batch, the bad ones
    reported; replacing them put the next good video into the metrics twice."""
    ann = write_pdan_world(tmp_path)
    (tmp_path / "rgb" / "t1.npy").write_bytes(b"not numpy")
    np.save(tmp_path / "rgb" / "t4.npy", np.full((8, 4), np.nan, dtype=np.float32))
    dm = untrimmed_module(tmp_path, ann)
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    assert [v for b in batches for v in b["video_id"]] == ["t0", "t2", "t3", "t5"]
    failed = [Path(f["path"]).name for b in batches for f in b["failures"]]
    assert failed == ["t1.npy", "t4.npy"] and sum(b.get("dropped", 0) for b in batches) == 2
    assert next(iter(dm.val_dataloader()))["features"]["rgb"].shape[0] == 4
    # training still replaces (an epoch of replacements is still an epoch of training)
    assert len(dm.train_set[0]["failures"]) == 0
