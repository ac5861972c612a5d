"""DDP with 2 CPU processes (gloo) for every LightningModule: what must agree across ranks does, and
logged epoch values equal the global value computed here from each rank's raw numbers.

``tests/ddp_worker.py`` runs the fits (Lightning re-executes it as rank 1) and dumps per-rank
results; every rank sees different data, so an unsynced value would differ between ranks or from
the global value. Separately, ``xmkd fit`` with ``devices=2`` checks that only rank zero writes the
run folder, the CSV log and the W&B run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from xmkd.metrics.detection import event_map, segments_from_frame_labels, segments_from_frame_scores

REPO = Path(__file__).resolve().parents[1]
CASES = ("xkd", "classifier", "teacher", "student")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}
    for key in ("XMKD_RUN_DIR", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> dict[str, list[dict]]:
    """One 2-process run of all four modules (one process launch instead of four)."""
    out = tmp_path_factory.mktemp("ddp")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_worker.py"), str(out), *CASES],
        cwd=out, env=_env(), capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    loaded = {}
    for case in CASES:
        files = [out / f"{case}_rank{r}.pt" for r in (0, 1)]
        assert all(f.is_file() for f in files), f"{case}: {proc.stderr[-2000:]}"
        loaded[case] = [torch.load(f, map_location="cpu", weights_only=False) for f in files]
        assert [d["world_size"] for d in loaded[case]] == [2, 2]
    return loaded


def assert_same_state(a: dict, b: dict, prefixes: tuple[str, ...]) -> int:
    keys = [k for k in a if k.startswith(prefixes)]
    assert keys, prefixes
    for k in keys:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs across ranks")
    return len(keys)


def test_xkd_teachers_centres_and_probe_agree_and_centre_is_all_reduced(ranks) -> None:
    r0, r1 = ranks["xkd"]
    # students by DDP's gradient all-reduce; EMA teachers and heads follow identical students;
    # the probe is trained inside the DDP module, so its gradients are averaged too
    assert_same_state(
        r0["state"], r1["state"], ("student.", "heads.", "teacher.", "teacher_heads.", "probes.")
    )
    assert_same_state(r0["state"], r1["state"], ("centers.",))

    # the DINO centre, recomputed from both ranks' teacher-head outputs: EMA of the GLOBAL batch mean
    outs = [d["record"]["teacher_head_video"] for d in (r0, r1)]
    assert len(outs[0]) == len(outs[1]) == 2  # one teacher pass per step
    momentum = 0.9
    center = torch.zeros(1, outs[0][0].shape[1])
    local = torch.zeros_like(center)
    for step in range(2):
        center = momentum * center + (1 - momentum) * torch.cat([outs[0][step], outs[1][step]]).mean(0)
        local = momentum * local + (1 - momentum) * outs[0][step].mean(0)
    torch.testing.assert_close(r0["state"]["centers.video.center"], center)
    # the ranks' data differ, so a rank-local centre would be wrong: the check above can fail
    assert not torch.allclose(local, center, atol=1e-4)

    # online probe accuracy: ranks see only label 0 / only label 1 and the probe says 0, so the
    # rank-local accuracies are 1 and 0; the logged epoch value must be the global 0.5
    hits = [sum(h for h, _ in d["record"]["val"]) for d in (r0, r1)]
    totals = [sum(n for _, n in d["record"]["val"]) for d in (r0, r1)]
    assert hits[0] / totals[0] != hits[1] / totals[1]
    expected = sum(hits) / sum(totals)
    for d in (r0, r1):
        assert d["metrics"]["val/probe_top1"].item() == pytest.approx(expected)
        assert d["metrics"]["ema/momentum"].item() < 1.0


def test_classifier_epoch_loss_and_video_accuracy_are_global(ranks) -> None:
    r0, r1 = ranks["classifier"]
    assert_same_state(r0["state"], r1["state"], ("encoder.", "head."))
    losses = [torch.tensor(d["record"]["train_loss"]) for d in (r0, r1)]
    assert len(losses[0]) == len(losses[1]) == 3
    assert abs(losses[0].mean() - losses[1].mean()) > 1e-3  # rank-local epoch means differ
    expected = torch.cat(losses).mean().item()  # equal batch sizes: the global mean of all steps
    for d in (r0, r1):
        assert d["metrics"]["train/loss_epoch"].item() == pytest.approx(expected, rel=1e-5)

    # validation: one clip per video, so video top-1 = the fraction of argmax hits over both ranks
    logits = torch.cat([x for d in (r0, r1) for x, _, _ in d["record"]["val"]])
    labels = torch.cat([y for d in (r0, r1) for _, y, _ in d["record"]["val"]])
    ids = [v for d in (r0, r1) for _, _, vs in d["record"]["val"] for v in vs]
    assert len(set(ids)) == 8  # every validation video once across the two ranks
    expected_top1 = (logits.argmax(1) == labels).float().mean().item()
    for d in (r0, r1):
        assert d["metrics"]["val/video_top1"].item() == pytest.approx(expected_top1)
        assert d["metrics"]["val/clip_top1"].item() == pytest.approx(expected_top1)


def test_two_stream_teacher_val_loss_and_map_synced(ranks) -> None:
    r0, r1 = ranks["teacher"]
    assert_same_state(r0["state"], r1["state"], ("rgb_head.", "aux_head."))
    per_rank = [torch.tensor(d["record"]["val"]) for d in (r0, r1)]
    assert abs(per_rank[0].mean() - per_rank[1].mean()) > 1e-3
    expected = torch.cat(per_rank).mean().item()
    for d in (r0, r1):
        assert d["metrics"]["val/loss"].item() == pytest.approx(expected, rel=1e-5)
    assert r0["metrics"]["val/map"].item() == pytest.approx(r1["metrics"]["val/map"].item())
    assert r0["metrics"]["val/map_25"].item() == pytest.approx(r1["metrics"]["val/map_25"].item())
    # event mAP over the videos of both ranks, computed here from each rank's raw scores
    preds, gts = [], []
    for d in (r0, r1):
        for probs, labels, mask in d["record"]["val_scores"]:
            for p, y, m in zip(probs, labels, mask):
                preds.append(segments_from_frame_scores(p[m], 1.0, 0.5))
                gts.append(segments_from_frame_labels(y[m], 1.0))
    assert len(preds) == 8 and sum(len(p) for p in preds) > 0
    expected = event_map(preds, gts, (0.1, 0.5), num_classes=3)
    for d in (r0, r1):
        for iou in (0.1, 0.5):
            assert d["metrics"][f"val/event_map@{iou:g}"].item() == pytest.approx(expected[iou].map, abs=1e-6)


def test_student_teacher_is_frozen_outside_ddp(ranks) -> None:
    r0, r1 = ranks["student"]
    for d in (r0, r1):
        seen = d["seen"]
        assert seen["wrapper"] == "DistributedDataParallel"
        assert seen["teacher_params_in_ddp"] == 0 and not seen["teacher_is_ddp_submodule"]
        assert seen["ddp_param_count"] > 0
        assert d["teacher_unchanged"]  # bit-identical after two steps
        # the teacher's heads are not in the student's checkpoint (teacher_proj is the student's own)
        assert not any(k.startswith("_teacher") or "rgb_head" in k or "aux_head" in k for k in d["state"])
    assert_same_state(r0["state"], r1["state"], ("head.", "distill_losses."))
    assert r0["metrics"]["val/map"].item() == pytest.approx(r1["metrics"]["val/map"].item())
    assert r0["metrics"]["val/loss"].item() == pytest.approx(r1["metrics"]["val/loss"].item())


# ------------------------------------------------------------------------ only rank zero writes

MODULE = textwrap.dedent(
    """
    import torch, lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        checkpoint_monitor = ("val/loss", "min")

        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train/loss", loss, sync_dist=True, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            self.log("val/loss", self.layer(batch[0]).pow(2).mean(), sync_dist=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4)

        def val_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    """
)


def test_only_rank_zero_writes_run_folder_csv_and_wandb(tmp_path: Path) -> None:
    (tmp_path / "tinyddp.py").write_text(MODULE)
    config = {
        "model": {"class_path": "tinyddp.Tiny"},
        "data": {"class_path": "tinyddp.Data"},
        "trainer": {
            "max_epochs": 1, "accelerator": "cpu", "devices": 2, "strategy": "ddp",
            "log_every_n_steps": 1, "enable_progress_bar": False,
        },
    }  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    before = set(tmp_path.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "xmkd.cli", "fit", "--config", "job.yaml"],
        cwd=tmp_path, env=_env(PYTHONPATH=f"{tmp_path}:{REPO}", WANDB_MODE="offline", WANDB_SILENT="true"),
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    # nothing but runs/ (and Python's cache of the tiny module) appeared in the project
    new = {p.name for p in set(tmp_path.iterdir()) - before} - {"__pycache__"}
    assert new == {"runs"}, new
    versions = sorted(p.name for p in (tmp_path / "runs" / "job").iterdir())
    assert versions == ["version_0"], versions  # rank 1 reused rank zero's folder, made none
    run = tmp_path / "runs" / "job" / "version_0"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 2  # 16 samples / 2 ranks / batch 4
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("metrics.csv")] == [
        Path("runs/job/version_0/metrics.csv")
    ]
    wandb_runs = [p for p in tmp_path.rglob("offline-run-*") if p.is_dir()]
    assert len(wandb_runs) == 1, wandb_runs  # one W&B run, created by rank zero only
    assert len(list(tmp_path.rglob("wandb_id.txt"))) == 1
