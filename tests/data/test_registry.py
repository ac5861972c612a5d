"""The dataset registry: a toy dataset registered once is read by the DataModule and ``xmkd data
inspect`` with no other change; the built-in entries; the untrimmed formats."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.data.media import write_video
from xmkd.data import registry
from xmkd.data.datasets.trimmed import TrimmedVideoDataModule
from xmkd.data.datasets.untrimmed import FORMAT_CLASS_ID_BASE, UntrimmedVideoDataModule
from xmkd.data.readers.trimmed import ClipRecord, TrimmedAnnotations
from xmkd.data.registry import TrimmedDataset, TrimmedSource, register_trimmed, train_test, trimmed_dataset
from xmkd.data.tools import inspect as inspect_tool
from xmkd.errors import AnnotationError, ConfigError


def read_toy(src: TrimmedSource) -> TrimmedAnnotations:
    """A toy format: ``<root>/list.txt`` lines ``<split> <class> <file>``, classes in sorted order."""
    path = Path(src.root) / "list.txt"
    if not path.is_file():
        raise AnnotationError(path, "toy list not found")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    names = sorted({cls for _, cls, _ in rows})
    records = [
        ClipRecord(path=str(Path(src.root) / f), label=names.index(cls), video_id=Path(f).stem, split=split)
        for split, cls, f in rows
    ]
    return TrimmedAnnotations(records, names, source=str(path), splits=("train", "test"))


@pytest.fixture
def toy(tmp_path: Path) -> Iterator[Path]:
    """A registered toy dataset (unregistered afterwards) and its root on disk."""
    lines = []
    for i, (split, cls) in enumerate([("train", "a"), ("train", "b"), ("train", "a"), ("test", "b")]):
        write_video(tmp_path / f"v{i}.mp4", num_frames=16, fps=8, size=32, audio=True)
        lines.append(f"{split} {cls} v{i}.mp4")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    register_trimmed(TrimmedDataset("toy", read_toy, "toy: list.txt of <split> <class> <file>"))
    try:
        yield tmp_path
    finally:
        del registry.TRIMMED_DATASETS["toy"]


def test_toy_dataset_reads_through_the_datamodule(toy: Path) -> None:
    dm = TrimmedVideoDataModule(
        dataset="toy",
        root=str(toy),
        num_frames=4,
        fps=8,
        audio_seconds=0.5,
        crop_size=32,
        local_crop_size=16,
        local_frames=2,
        test_clips=1,
        test_crops=1,
        batch_size=2,
        num_workers=0,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names == ["a", "b"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 3, 4, 32, 32) and batch["audio"].shape == (2, 8000)
    val = next(iter(dm.val_dataloader()))
    assert val["video_id"] == ["v3"] and val["label"].tolist() == [1]


def test_toy_dataset_reads_through_inspect(toy: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    inspect_tool.add_arguments(parser)
    code = inspect_tool.run(parser.parse_args(["toy", "--root", str(toy), "--decode", "2", "--frames", "4"]))
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["dataset"] == "toy" and result["num_classes"] == 2
    assert result["splits"]["train"] == {"listed": 3, "found": 3, "missing_examples": []}
    assert [d["split"] for d in result["decoded"]] == ["train", "test"]


def test_unknown_dataset_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"dataset.*ucf101 \| hmdb51.*got 'ucf1o1'"):
        TrimmedVideoDataModule(dataset="ucf1o1", root=".")
    with pytest.raises(ConfigError, match=r"synthetic, got 'esc50'"):
        TrimmedVideoDataModule(dataset="esc50", root=".")


def test_names_taken_twice_are_refused() -> None:
    with pytest.raises(ConfigError, match="'synth' is already registered"):
        register_trimmed(TrimmedDataset("synth", read_toy, "clash with the synthetic set's alias"))


def test_builtin_entries_keep_their_folds_and_defaults() -> None:
    folds = {n: s.folds for n, s in registry.TRIMMED_DATASETS.items()}
    assert folds == {
        "ucf101": (1, 2, 3),
        "hmdb51": (1, 2, 3),
        "kinetics": (1,),
        "csv": (1,),
        "synthetic": (1, 2, 3),
        "esc50": (1, 2, 3, 4, 5),
    }
    defaults = {
        n: (s.linear_eval_train_clips, s.linear_eval_test_crops) for n, s in registry.TRIMMED_DATASETS.items()
    }
    assert defaults["synthetic"] == (5, 1) and defaults["esc50"] == (100, 1) and defaults["ucf101"] == (25, 3)
    assert registry.trimmed_names(video=False) == ("esc50",)


def test_train_test_puts_every_non_train_record_in_test() -> None:
    recs = [
        ClipRecord("a", 0, "a", split="train"),
        ClipRecord("b", 0, "b", split="val"),
        ClipRecord("c", 0, "c"),
    ]
    train, test = train_test(TrimmedAnnotations(recs, ["x"]))
    assert [r.video_id for r in train] == ["a"] and [r.video_id for r in test] == ["b", "c"]


def test_missing_inputs_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="splits"):
        registry.read_trimmed("ucf101", TrimmedSource(str(tmp_path)))
    with pytest.raises(ConfigError, match="annotation"):
        registry.read_trimmed("kinetics", TrimmedSource(str(tmp_path)))
    with pytest.raises(ConfigError, match="classes"):
        registry.read_trimmed("csv", TrimmedSource(str(tmp_path), annotation="x.csv", classes=["a"]))
    assert trimmed_dataset("synthetic").aliases == ("synth",)


def test_untrimmed_formats_come_from_the_registry() -> None:
    assert set(FORMAT_CLASS_ID_BASE) == set(registry.UNTRIMMED_FORMATS)
    with pytest.raises(ConfigError, match=r"format.*charades_csv.*got 'charades'"):
        UntrimmedVideoDataModule(format="charades", feature_root=".", annotations=["x.json"])
