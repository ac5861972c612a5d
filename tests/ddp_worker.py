"""2-process CPU DDP runs of each xmkd LightningModule, dumping what tests/test_ddp.py compares.

Usage: ``python tests/ddp_worker.py OUT_DIR CASE [CASE ...]`` with CASE in xkd, classifier, teacher,
student. Lightning's DDP launcher re-executes this very command for rank 1, so each case's fit runs
in both processes; every rank then writes ``OUT_DIR/<case>_rank<r>.pt`` holding

- ``state``: the module's state dict (students, EMA teachers, DINO centres, probes, heads),
- ``metrics``: ``trainer.callback_metrics`` (what was logged, after Lightning's epoch reduction),
- ``record``: per-rank raw numbers recorded by callbacks (per-step losses, teacher-head outputs,
  probe hits) from which the parent test computes the *global* value independently.

Every rank sees different data (DistributedSampler gives rank r the indices r, r + 2, ...), so an
unsynced metric or buffer would differ between the ranks or from the global value.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from xmkd.models.vit import ViTEncoder, save_exported_encoder, video_encoder_config
from xmkd.modules.classifier import VideoClassifier
from xmkd.modules.detection import AugmentedRGBStudent, TwoStreamTeacher
from xmkd.modules.xkd import XKDPretrainer

SAMPLES = 143 * 31  # 32 spectrogram frames with the XKD STFT
XKD_TINY = dict(
    encoder_size="tiny", encoder_depth=1, num_frames=4, img_size=32, tubelet=2, patch_size=16,
    audio_frames=32, audio_local_frames=16, decoder_dim=16, decoder_depth=1, decoder_heads=2,
    head_hidden_dim=16, head_bottleneck_dim=8, head_out_dim=32, warmup_epochs=0.0, lr=1e-3,
    recon_log_every_n_epochs=0, num_local_views=1, probe_num_classes=2, probe_lr=1e-4,
)  # fmt: skip
C, D_RGB, D_FLOW = 3, 6, 5
HEAD = {"num_classes": C, "channels": 8, "num_blocks": 1, "plot_videos": 0}


def trainer(out: Path, **kw) -> pl.Trainer:
    opts = dict(
        accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=out, max_epochs=1,
    )  # fmt: skip
    opts.update(kw)
    return pl.Trainer(**opts)


class Recorder(pl.Callback):
    """Per-rank raw values: training-step losses, and whatever ``on_val`` computes per val batch."""

    def __init__(self, on_val=None) -> None:
        self.record: dict[str, list] = {"train_loss": [], "val": []}
        self.on_val = on_val

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.record["train_loss"].append(float(loss))

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.on_val is not None:
            self.record["val"].append(self.on_val(pl_module, batch))


def dump(out: Path, case: str, tr: pl.Trainer, module: pl.LightningModule, record: dict, **extra) -> None:
    payload = {
        "state": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "metrics": {k: v.detach().cpu().clone() for k, v in tr.callback_metrics.items()},
        "record": record,
        "world_size": tr.world_size,
        **extra,
    }
    torch.save(payload, out / f"{case}_rank{tr.global_rank}.pt")


# ---------------------------------------------------------------------------------------------- XKD


class Clips(torch.utils.data.Dataset):
    """Clips whose label is the index parity, so rank 0 only sees label 0 and rank 1 only label 1."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.video = torch.randn(n, 3, 4, 32, 32, generator=g)
        self.local = torch.randn(n, 1, 3, 2, 16, 16, generator=g)
        self.audio = torch.randn(n, SAMPLES, generator=g) * 0.1
        # rank 1's clips are brighter: its teacher outputs differ from rank 0's
        self.video[1::2] += 2.0
        self.local[1::2] += 2.0

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.video[i], "video_local": self.local[i], "audio": self.audio[i], "label": i % 2}


def run_xkd(out: Path) -> None:
    torch.manual_seed(0)
    model = XKDPretrainer(**XKD_TINY)
    with torch.no_grad():  # the probe predicts class 0 whatever it sees: rank accuracies 1 vs 0
        model.probes["video"].bias.copy_(torch.tensor([50.0, 0.0]))
    heads_out: list[torch.Tensor] = []
    model.teacher_heads["video"].register_forward_hook(lambda m, i, o: heads_out.append(o.detach().float()))

    def probe_hits(module, batch) -> tuple[int, int]:
        pred = module.probes["video"](module.student["video"].patch_mean(batch["video"]).float()).argmax(-1)
        return int((pred == batch["label"]).sum()), len(pred)

    rec = Recorder(probe_hits)
    tr = trainer(out, max_steps=2, callbacks=[rec])
    tr.fit(model, DataLoader(Clips(8, 0), batch_size=2), DataLoader(Clips(8, 1), batch_size=2))
    rec.record["teacher_head_video"] = heads_out
    dump(out, "xkd", tr, model, rec.record)


# ------------------------------------------------------------------------------------- classifier


class VideoItems(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.video = torch.randn(n, 3, 4, 32, 32, generator=g)
        self.video[1::2] *= 3.0  # rank 1's losses differ from rank 0's

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.video[i], "label": i % 3, "video_id": f"v{i}", "clip_index": 0, "crop_index": 0}


def run_classifier(out: Path) -> None:
    torch.manual_seed(0)
    cfg = video_encoder_config("tiny", 4, 32, 2, 16, depth=1)
    cfg.dim, cfg.num_heads = 16, 2
    # Each rank exports the same seeded encoder to its own folder (no two processes write one file).
    path = save_exported_encoder(
        ViTEncoder(cfg), out / f"encoder{os.environ.get('LOCAL_RANK', '0')}" / "v.pt"
    )
    model = VideoClassifier(
        str(path), num_classes=3, mode="finetune", mix_prob=0.0, head_dropout=0.0, drop_path=0.0, lr=1e-3
    )
    with torch.no_grad():  # a head far from uniform, so the ranks' losses differ visibly
        model.head[1].weight.normal_(0.0, 1.0)

    def val_logits(module, batch):
        return module(batch["video"]).cpu(), batch["label"].cpu(), list(batch["video_id"])

    rec = Recorder(val_logits)
    tr = trainer(out, max_steps=3, callbacks=[rec])
    tr.fit(model, DataLoader(VideoItems(12, 0), batch_size=2), DataLoader(VideoItems(8, 1), batch_size=2))
    dump(out, "classifier", tr, model, rec.record)


# -------------------------------------------------------------------------------------- detection


def videos(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        labels = (torch.rand(8, C, generator=g) < 0.3).float()
        labels[0, i % C] = 1.0
        scale = 1.0 + 2.0 * (i % 2)
        items.append(
            {
                "features": {
                    "rgb": torch.randn(8, D_RGB, generator=g) * scale,
                    "flow": torch.randn(8, D_FLOW, generator=g) * scale,
                },
                "labels": labels,
                "video_id": f"v{i}",
            }
        )
    return items


def collate(items: list[dict]) -> dict:
    return {
        "features": {m: torch.stack([x["features"][m] for x in items]) for m in ("rgb", "flow")},
        "labels": torch.stack([x["labels"] for x in items]),
        "mask": torch.ones(len(items), 8, dtype=torch.bool),
        "video_id": [x["video_id"] for x in items],
    }


def detection_loaders() -> tuple[DataLoader, DataLoader]:
    return (
        DataLoader(videos(8, 0), batch_size=2, collate_fn=collate),
        DataLoader(videos(8, 1), batch_size=2, collate_fn=collate),
    )


def val_loss(module, batch) -> float:
    module.eval()
    return float(module.shared_loss(module(batch), batch))


class ValScores(pl.Callback):
    """Per-rank (probabilities, labels, mask) of every validation batch (for the event mAP)."""

    def __init__(self) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        probs = pl_module(batch)["logits"].sigmoid()
        self.batches.append((probs.cpu(), batch["labels"].cpu(), batch["mask"].cpu()))


def run_teacher(out: Path) -> None:
    torch.manual_seed(0)
    model = TwoStreamTeacher(
        aux_modality="flow", rgb_dim=D_RGB, aux_dim=D_FLOW, event_iou_thresholds=[0.1, 0.5], **HEAD
    )
    rec, scores = Recorder(val_loss), ValScores()
    tr = trainer(out, max_steps=2, callbacks=[rec, scores])
    rec.record["val_scores"] = scores.batches
    tr.fit(model, *detection_loaders())
    dump(out, "teacher", tr, model, rec.record)


def run_student(out: Path) -> None:
    torch.manual_seed(0)
    teacher = TwoStreamTeacher(aux_modality="flow", rgb_dim=D_RGB, aux_dim=D_FLOW, **HEAD)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    model = AugmentedRGBStudent(teacher=teacher, rgb_dim=D_RGB, **HEAD)
    seen: dict[str, object] = {}

    class Inspect(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            wrapped = trainer.strategy.model
            teacher_ids = {id(p) for p in pl_module.teacher.parameters()}
            seen["wrapper"] = type(wrapped).__name__
            seen["teacher_params_in_ddp"] = sum(id(p) in teacher_ids for p in wrapped.parameters())
            seen["teacher_is_ddp_submodule"] = any(m is pl_module.teacher for m in wrapped.modules())
            seen["ddp_param_count"] = sum(1 for _ in wrapped.parameters())

    rec = Recorder()
    tr = trainer(out, max_steps=2, callbacks=[rec, Inspect()])
    tr.fit(model, *detection_loaders())
    teacher_unchanged = all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    dump(out, "student", tr, model, rec.record, seen=seen, teacher_unchanged=teacher_unchanged)


CASES = {"xkd": run_xkd, "classifier": run_classifier, "teacher": run_teacher, "student": run_student}

if __name__ == "__main__":
    torch.set_num_threads(1)
    out_dir = Path(sys.argv[1])
    for name in sys.argv[2:]:
        CASES[name](out_dir)
