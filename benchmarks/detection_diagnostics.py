"""Why a distillation term does or does not move the Augmented-RGB student: diagnostics on the
checkpoints of a ``make distill-detection`` run.

    python benchmarks/detection_diagnostics.py --runs runs [--seed 0] [--rows rgb student atomic]

For one seed it loads the teacher and the named rows' best checkpoints and reports, on the synthetic
world's test videos:

1. **What each embedding knows**: a ridge probe from one step's embedding to the labels (trained on
   the training videos, per-frame mAP on the test videos), for the teacher's fused, RGB-stream and
   auxiliary(flow)-stream embeddings and for each row's.
2. **Whether the student moved towards the teacher**: R^2 of each teacher embedding predicted
   linearly from a row's embedding (a linear map fitted on the training videos).
3. **Which term's gradient dominates**: per-term gradient norms on a fresh student's head at
   initialisation, on four training batches, for every term of the registry (with the
   ``--distill-options`` of the student's config, e.g. the GCR and ABS interpretations).

Numbers only; nothing is written except ``--json``. The README's Augmented-RGB section quotes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xmkd.data.datasets.untrimmed import UntrimmedVideoDataModule  # noqa: E402
from xmkd.distill.detection import DISTILL_LOSSES  # noqa: E402
from xmkd.metrics.detection import per_frame_map  # noqa: E402
from xmkd.modules.detection import AugmentedRGBStudent, SingleStreamDetector, TwoStreamTeacher  # noqa: E402

TEACHER_KEYS = ("embedding", "rgb_embedding", "aux_embedding")


def best_checkpoint(runs: Path, row: str, seed: int) -> Path:
    found = sorted(
        (runs / "distill-detection" / f"{row}-seed{seed}").glob("version_*/checkpoints/best-*.ckpt")
    )
    if not found:
        raise FileNotFoundError(
            f"no best checkpoint of row {row!r} seed {seed} under {runs / 'distill-detection'}"
        )
    return found[-1]


def batches(runs: Path, feature_root: str, subset: str) -> list[dict[str, Any]]:
    dm = UntrimmedVideoDataModule(
        format="synthetic",
        feature_root=feature_root,
        modalities=["rgb", "flow"],
        annotations=[str(runs / "distill-detection" / "annotations_train-val-test.json")],
        eval_subset=subset,
        max_len=None,
        batch_size=16,
    )
    dm.setup("test")
    return list(dm.test_dataloader())


def ridge(x: torch.Tensor, y: torch.Tensor, x_new: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """Ridge regression with a bias, fitted on (x, y), applied to x_new (float64)."""

    def bias(a: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)

    xb = bias(x)
    w = torch.linalg.solve(xb.T @ xb + lam * torch.eye(xb.shape[1], dtype=x.dtype), xb.T @ y)
    return bias(x_new) @ w


def embeddings(teacher: Any, models: dict[str, Any], data: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Every valid step's teacher embeddings, each model's embedding and the labels (float64)."""
    out: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for b in data:
            m = b["mask"]
            t = teacher(b)
            for k in TEACHER_KEYS:
                out.setdefault(f"teacher.{k}", []).append(t[k][m])
            for name, model in models.items():
                out.setdefault(name, []).append(model(b)["embedding"][m])
            out.setdefault("labels", []).append(b["labels"][m])
    return {k: torch.cat(v).double() for k, v in out.items()}


def gradient_norms(teacher: Any, data: list[dict[str, Any]], student_hp: dict[str, Any]) -> dict[str, float]:
    """Mean per-term gradient norm on a fresh student head (seed 0) over ``data``."""
    options = dict(student_hp.get("distill_options") or {})
    terms = {name: 1.0 for name in DISTILL_LOSSES}
    torch.manual_seed(0)
    student = AugmentedRGBStudent(
        teacher=teacher,
        rgb_dim=student_hp["rgb_dim"],
        num_classes=student_hp["num_classes"],
        channels=student_hp["channels"],
        num_blocks=student_hp["num_blocks"],
        dropout=0.0,
        distill=terms,
        distill_options={k: v for k, v in options.items() if k in terms},
        teacher_embedding=student_hp.get("teacher_embedding", "aux"),
    ).train()
    params = list(student.head.parameters())
    norms: dict[str, list[float]] = {}
    for b in data:
        out = student(b)
        for name, value in {"det": student.shared_loss(out, b), **student.distillation_terms(out, b)}.items():
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            norm = torch.sqrt(sum((g**2).sum() for g in grads if g is not None))
            norms.setdefault(name, []).append(float(norm))
    return {k: sum(v) / len(v) for k, v in norms.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default="runs", help="the --runs-dir of make distill-detection")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", nargs="+", default=["rgb", "student"], help="rows whose embeddings to read")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    runs = Path(args.runs)
    results = json.loads((runs / "distill-detection" / "results.json").read_text())
    feature_root = results["data"]["feature_root"]
    teacher = TwoStreamTeacher.load_from_checkpoint(
        best_checkpoint(runs, "teacher", args.seed), map_location="cpu"
    )
    teacher.eval()
    models: dict[str, Any] = {}
    student_hp: dict[str, Any] | None = None
    for row in args.rows:
        ckpt = best_checkpoint(runs, row, args.seed)
        hp = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
        if "distill" in hp:
            models[row] = AugmentedRGBStudent.load_from_checkpoint(ckpt, map_location="cpu").eval()
            student_hp = student_hp or hp
        else:
            models[row] = SingleStreamDetector.load_from_checkpoint(ckpt, map_location="cpu").eval()
    train, test = batches(runs, feature_root, "training"), batches(runs, feature_root, "testing")
    tr, te = embeddings(teacher, models, train), embeddings(teacher, models, test)
    report: dict[str, Any] = {"probe_map": {}, "teacher_r2": {}}
    print("1. linear probe, one step's embedding -> labels (test per-frame mAP %):")
    for key in [k for k in tr if k != "labels"]:
        value = per_frame_map(ridge(tr[key], tr["labels"], te[key]).float(), te["labels"]).map
        report["probe_map"][key] = value
        print(f"   {key:24s} {100 * value:5.1f}")
    print("2. R^2 of each teacher embedding predicted linearly from a row's embedding (test steps):")
    for tk in TEACHER_KEYS:
        target = f"teacher.{tk}"
        cells = {}
        for row in models:
            pred = ridge(tr[row], tr[target], te[row])
            resid = ((pred - te[target]) ** 2).sum() / ((te[target] - te[target].mean(0)) ** 2).sum()
            cells[row] = float(1 - resid)
        report["teacher_r2"][target] = cells
        print(f"   {target:24s} " + "  ".join(f"{r} {v:.3f}" for r, v in cells.items()))
    if student_hp is not None:
        norms = gradient_norms(teacher, train[:4], student_hp)
        report["gradient_norms"] = norms
        print("3. gradient norm on the student head at initialisation, per term (weight 1):")
        for name, value in norms.items():
            print(f"   {name:10s} {value:8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
