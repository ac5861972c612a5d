"""Shards (xmkd.data.datasets.shards): written and read back equal to per-file reading, split once per item
across DDP ranks, resumed mid-epoch to exactly the remaining items, and bad input named."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from tests.data.media import write_garbage, write_video
from xmkd.data.datasets import transforms as T
from xmkd.data.datasets.shards import (
    ShardReader,
    ShardStream,
    read_manifest,
    read_shard_records,
    shard_loader,
    write_shards,
    write_split,
)
from xmkd.data.datasets.trimmed import (
    RandomClipSampler,
    TrimmedVideoDataModule,
    TrimmedVideoDataset,
    UniformClipSampler,
)
from xmkd.data.io.video_io import EncodedMedia, probe, read_audio, read_clip
from xmkd.data.readers.trimmed import ClipRecord
from xmkd.data.synthetic.av import ensure_synthetic_av
from xmkd.errors import BadInputError, ConfigError, MediaError
from xmkd.fault import AtomicCheckpointIO, PreemptionCheckpoint, ResumeState, call_seeded, item_seed

REPO = Path(__file__).resolve().parents[3]
CLIP = dict(num_frames=4, fps=8.0, with_audio=True, audio_seconds=0.5)
NUM_TRAIN = 10

pytestmark = pytest.mark.usefixtures("one_thread")


def views() -> T.XKDVideoViews:
    return T.XKDVideoViews(num_frames=4, size=32, local_frames=2, local_size=16)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, list[ClipRecord]]:
    """12 tiny mp4 files with audio (10 train, 2 test), 3 labels, of different lengths."""
    d = tmp_path_factory.mktemp("videos")
    records: dict[str, list[ClipRecord]] = {"train": [], "test": []}
    for i in range(NUM_TRAIN + 2):
        path = write_video(
            d / f"v{i:02d}.mp4", num_frames=16 + 4 * (i % 3), fps=16, size=40, audio_freq=200 + 50 * i
        )
        split = "train" if i < NUM_TRAIN else "test"
        records[split].append(ClipRecord(str(path), i % 3, path.stem, split=split))
    return records


@pytest.fixture(scope="module")
def shards(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "set"
    # ~25 KB chunks: several items per chunk and several chunks per split
    write_shards(videos, ["a", "b", "c"], out, dataset="test", chunk_bytes="25KB")
    return out


def per_file(records: list[ClipRecord]) -> TrimmedVideoDataset:
    return TrimmedVideoDataset(records, RandomClipSampler(1), views(), **CLIP)


def stream(shards: Path, **stream_options: Any) -> ShardStream:
    """The training stream as the DataModule builds it (seed 7): clips without records, decoded from the chunks."""
    clips = TrimmedVideoDataset([], RandomClipSampler(1), views(), **CLIP)
    return ShardStream(str(shards / "train"), clips, seed=7, **stream_options)


def assert_same_sample(
    a: dict, b: dict, where: str, keys: tuple[str, ...] = ("video", "video_local", "audio")
) -> None:
    assert a["video_id"] == b["video_id"] and a["label"] == b["label"], where
    for key in keys:
        assert torch.equal(a[key], b[key]), f"{where}: {key} differs"


def unbatch(batch: dict) -> list[dict]:
    return [
        {k: batch[k][j] for k in ("video", "video_local", "audio", "label", "video_id")}
        for j in range(len(batch["video_id"]))
    ]


# ----------------------------------------------------------------------------------------------
# writing


def test_manifest_records_and_chunks(shards: Path, videos) -> None:
    manifest = read_manifest(shards)
    assert manifest.dataset == "test" and manifest.class_names == ["a", "b", "c"]
    train = manifest.splits["train"]
    assert train["items"] == train["listed"] == NUM_TRAIN and train["chunks"] > 1
    assert train["bytes"] == sum(os.path.getsize(r.path) for r in videos["train"])
    assert read_shard_records(manifest, "train") == videos["train"]
    assert read_shard_records(manifest, "test") == videos["test"]


def test_items_hold_the_files_bytes(shards: Path, videos) -> None:
    """The chunks store the original compressed files, not decoded frames."""
    from litdata import StreamingDataset

    raw = StreamingDataset(str(shards / "train"))
    for i, r in enumerate(videos["train"]):
        assert int(raw[i]["index"]) == i and raw[i]["video"].tobytes() == Path(r.path).read_bytes()


def test_missing_and_bad_files_are_named(videos, tmp_path: Path) -> None:
    bad = write_garbage(tmp_path / "broken.mp4")
    gone = tmp_path / "gone.mp4"
    records = [*videos["train"][:2], ClipRecord(str(bad), 0, "broken"), ClipRecord(str(gone), 1, "gone")]
    with pytest.raises(MediaError, match=r"gone\.mp4"):
        write_split(records, tmp_path / "a")
    with pytest.raises(MediaError, match=r"broken\.mp4"):
        write_split(records, tmp_path / "b", missing="skip")
    entry = write_split(records, tmp_path / "c", missing="skip", on_bad_input="skip")
    assert entry["items"] == 2 and entry["listed"] == 4 and entry["missing"] == [str(gone)]
    assert [f["path"] for f in entry["failures"]] == [str(bad)]
    with pytest.raises(ConfigError, match="not empty"):
        write_split(records[:2], tmp_path / "c")
    with pytest.raises(ConfigError, match="on_bad_input"):
        write_split(records[:2], tmp_path / "d", on_bad_input="ignore")


def test_manifest_errors_name_the_file(tmp_path: Path, shards: Path) -> None:
    with pytest.raises(ConfigError, match="not a shard folder"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(BadInputError, match=r"manifest\.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(BadInputError, match="not an xmkd shard manifest"):
        read_manifest(tmp_path)
    with pytest.raises(ConfigError, match="no 'val' split"):
        read_manifest(shards).split_dir("val")


# ----------------------------------------------------------------------------------------------
# reading: the same samples as per-file reading


def test_encoded_media_decodes_like_the_file(realdata) -> None:
    """Real UCF101 AVI (packed B-frames, mp3) and an h264/AAC mp4: same frames, audio and probe from bytes."""
    for relative in ("ucf101/videos/v_ApplyEyeMakeup_g01_c01.avi", "av/v_GGSY1Qvo990.mp4"):
        path = realdata(relative)
        media = EncodedMedia(str(path), path.read_bytes())
        assert probe(media) == probe(path)
        assert torch.equal(read_clip(media, 1.3, 8, 8.0), read_clip(path, 1.3, 8, 8.0))
        assert torch.equal(read_audio(media, 1.0, 0.5), read_audio(path, 1.0, 0.5))


def test_encoded_media_errors_name_the_source() -> None:
    with pytest.raises(MediaError, match=r"shard/x\.avi.*empty"):
        probe(EncodedMedia("shard/x.avi", b""))
    with pytest.raises(MediaError, match=r"shard/x\.avi"):
        read_clip(EncodedMedia("shard/x.avi", os.urandom(2048)), 0.0, 4)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_items_equal_per_file_items(shards: Path, videos, num_workers: int) -> None:
    """Epochs 0 and 1: every item once, decoded and augmented as the per-file item (seed, epoch, index)."""
    reference = per_file(videos["train"])
    loader = shard_loader(stream(shards), batch_size=3, num_workers=num_workers)
    orders = []
    for epoch in (0, 1):
        seen = []
        for batch in loader:
            for sample in unbatch(batch):
                i = int(sample["video_id"][1:])
                ref = call_seeded(item_seed(7, epoch, i), reference.__getitem__, i)
                assert_same_sample(ref, sample, f"epoch {epoch} item {i}")
                seen.append(i)
        assert sorted(seen) == list(range(NUM_TRAIN))
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled per epoch


def test_eval_split_equals_per_file_eval(shards: Path, videos) -> None:
    transform = T.VideoEvalTransform(size=32, num_crops=3)
    kwargs = dict(num_crops=3, skip_mode="drop", **CLIP)
    reference = TrimmedVideoDataset(videos["test"], UniformClipSampler(2), transform, **kwargs)
    records = read_shard_records(read_manifest(shards), "test")
    media = ShardReader(shards / "test", records)
    sharded = TrimmedVideoDataset(records, UniformClipSampler(2), transform, media=media, **kwargs)
    assert len(sharded) == len(reference) == 12
    for i in range(len(reference)):
        a, b = reference[i], sharded[i]
        assert (a["clip_index"], a["crop_index"]) == (b["clip_index"], b["crop_index"])
        assert_same_sample(a, b, f"item {i}", keys=("video", "audio"))


# ----------------------------------------------------------------------------------------------
# resume and DDP


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_gives_exactly_the_remaining_items(shards: Path, num_workers: int) -> None:
    def run(loader, batches: int | None = None) -> list[dict]:
        # islice stops without fetching batch ``batches`` (a fetched batch counts as yielded)
        return [sample for batch in itertools.islice(loader, batches) for sample in unbatch(batch)]

    whole = run(shard_loader(stream(shards), batch_size=2, num_workers=num_workers))
    first = shard_loader(stream(shards), batch_size=2, num_workers=num_workers)
    head = run(first, batches=2)
    state = first.state_dict()
    resumed = shard_loader(stream(shards), batch_size=2, num_workers=num_workers)
    resumed.load_state_dict(state)
    tail = run(resumed)
    assert len(head) == 4 and len(head) + len(tail) == len(whole) == NUM_TRAIN
    for k, (a, b) in enumerate(zip(whole, head + tail)):
        assert_same_sample(a, b, f"position {k}")


DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch.distributed as dist
    sys.path.insert(0, sys.argv[3])
    from tests.data.datasets.test_shards import stream
    from xmkd.data.datasets.shards import shard_loader
    from pathlib import Path

    dist.init_process_group("gloo")  # the stream reads rank and world size from the process group
    kwargs = {} if sys.argv[2] == "default" else {"drop_last": False}
    loader = shard_loader(stream(Path(sys.argv[1]), **kwargs), batch_size=2)
    seen = [[vid for b in loader for vid in b["video_id"]] for _ in range(2)]  # two epochs
    print(json.dumps({"rank": dist.get_rank(), "seen": seen}))
    dist.destroy_process_group()
    """
)


def run_two_ranks(tmp_path: Path, shards: Path, mode: str) -> list[list[list[str]]]:
    script = tmp_path / "ddp_stream.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(29500 + os.getpid() % 2000)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(shards), mode, str(REPO)],
            env={**env, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = sorted((json.loads(out.strip().splitlines()[-1]) for out, _ in outs), key=lambda d: d["rank"])
    return [d["seen"] for d in results]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_two_ranks_see_each_item_once_per_epoch(shards: Path, tmp_path: Path) -> None:
    """A real 2-process gloo group: the ranks' items are disjoint; with ``drop_last: False`` together the
    whole split; by default (litdata's DDP ``drop_last``) whole batches on every rank, 2 x 2 x 2 of 10."""
    every = {f"v{i:02d}" for i in range(NUM_TRAIN)}
    for mode, per_rank in (("no_drop", None), ("default", 4)):
        ranks = run_two_ranks(tmp_path, shards, mode)
        for epoch in (0, 1):
            r0, r1 = ranks[0][epoch], ranks[1][epoch]
            assert len(set(r0 + r1)) == len(r0 + r1), f"{mode} epoch {epoch}: an item read twice"
            if per_rank is None:
                assert set(r0 + r1) == every, f"{mode} epoch {epoch}: items missing"
            else:
                assert len(r0) == len(r1) == per_rank and set(r0 + r1) <= every


# ----------------------------------------------------------------------------------------------
# the DataModule under Lightning: a preempted run resumes with the uninterrupted run's batches


class Recorder(pl.LightningModule):
    """Records what each training step sees (ids and a checksum of the augmented views)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, list[str], float]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        checksum = float(
            batch["video"].double().sum()
            + batch["video_local"].double().sum()
            + batch["audio"].double().sum()
        )
        self.seen.append((self.current_epoch, list(batch["video_id"]), checksum))
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SigtermAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def datamodule(shards: Path) -> TrimmedVideoDataModule:
    return TrimmedVideoDataModule(
        dataset="csv", shards=str(shards), num_frames=4, fps=8.0, audio_seconds=0.5, crop_size=32,
        local_crop_size=16, local_frames=2, batch_size=2, num_workers=0,
    )  # fmt: skip


def trainer(root: Path, extra: list[pl.Callback] | None = None) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=2, default_root_dir=root, logger=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            pl.callbacks.ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0),
            PreemptionCheckpoint(), ResumeState(), *(extra or []),
        ],
    )  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", [7, 5])  # mid-epoch 2; the end of epoch 1 (5 batches an epoch)
def test_datamodule_resumes_the_stream_exactly(shards: Path, tmp_path: Path, stop: int) -> None:
    pl.seed_everything(3)
    whole = Recorder()
    trainer(tmp_path / "a").fit(whole, datamodule=datamodule(shards))
    assert len(whole.seen) == 10 and {e for e, *_ in whole.seen} == {0, 1}

    pl.seed_everything(3)
    head = Recorder()
    with pytest.raises(SystemExit):
        trainer(tmp_path / "b", [SigtermAt(stop)]).fit(head, datamodule=datamodule(shards))
    pl.seed_everything(3)
    tail = Recorder()
    trainer(tmp_path / "b").fit(
        tail, datamodule=datamodule(shards), ckpt_path=tmp_path / "b" / "checkpoints" / "last.ckpt"
    )
    assert head.seen[:stop] + tail.seen == whole.seen


def test_datamodule_reads_classes_and_refuses_clips_per_video(shards: Path) -> None:
    dm = datamodule(shards)
    dm.setup("fit")
    assert dm.class_names == ["a", "b", "c"] and isinstance(dm.train_set, ShardStream)
    assert isinstance(dm.eval_set.media, ShardReader) and len(dm.eval_set) == 2 * 3 * 3
    dm = TrimmedVideoDataModule(dataset="csv", shards=str(shards), train_clips_per_video=2)
    with pytest.raises(ConfigError, match="train_clips_per_video"):
        dm.setup("fit")


@pytest.mark.slow
def test_cli_writes_shards_of_the_synthetic_set(tmp_path: Path) -> None:
    root = ensure_synthetic_av(
        tmp_path / "synth", workers=1, classes=2, clips_per_class=4, clips_per_group=1, duration=1.0, size=32
    )
    out = tmp_path / "shards"
    proc = subprocess.run(
        [sys.executable, "-m", "xmkd", "data", "shard", "--root", str(root), "--out", str(out), "--workers", "0"],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = read_manifest(out)
    assert manifest.dataset == "synthetic" and len(manifest.class_names) > 1
    listed = {split: len(read_shard_records(manifest, split)) for split in ("train", "test")}
    assert listed == {s: manifest.splits[s]["items"] for s in ("train", "test")} and min(listed.values()) > 0
    assert "train with data.shards=" in proc.stdout
    shutil.rmtree(root)  # training from the shards needs no video folder
    dm = TrimmedVideoDataModule(
        dataset="synthetic", shards=str(out), num_frames=4, crop_size=32, local_crop_size=16, local_frames=2
    )
    dm.setup("fit")
    assert dm.num_classes == len(manifest.class_names)
