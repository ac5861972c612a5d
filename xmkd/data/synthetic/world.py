"""What a generated untrimmed world is, and how it is written to disk in the real datasets' formats.

Both synthetic untrimmed worlds (:mod:`xmkd.data.synthetic.untrimmed`: ``evidence``;
:mod:`xmkd.data.synthetic.motion`: ``motion``) produce a list of :class:`SyntheticVideo` and write it
with :func:`write_world`: ``rgb/``, ``flow/`` (and ``pose/``) ``<video_id>.npy`` float32 (T, D);
``Charades_v1_train.csv``, ``Charades_v1_test.csv`` and ``Charades_v1_classes.txt`` in the official
Charades layout; ``annotations.json`` in the PDAN layout; ``dataset.json`` with the world, its
parameters and counts.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmkd.data.readers.untrimmed import CHARADES_CSV_COLUMNS, Segment

#: Bumped when the layout or content of a written world changes (an old folder is then refused).
FORMAT_VERSION = 1


@dataclass
class SyntheticVideo:
    video_id: str
    subset: str
    duration_s: float
    segments: list[Segment]
    features: dict[str, np.ndarray]
    labels: np.ndarray  # (T, C) ground truth of the written segments, the dataset's own rule
    # where the annotations are noisy (the motion world's training videos): the true segments
    true_segments: list[Segment] | None = field(default=None)
    # the generator's hidden state per step (e.g. the motion world's velocities); never written
    latents: dict[str, np.ndarray] = field(default_factory=dict)


def class_names(num_classes: int) -> list[str]:
    return [f"Synthetic action {i:02d}" for i in range(num_classes)]


def _charades_row(video: SyntheticVideo, index: int) -> dict[str, str]:
    actions = ";".join(f"c{s.label:03d} {s.start_s:.2f} {s.end_s:.2f}" for s in video.segments)
    return {
        "id": video.video_id,
        "subject": f"SUB{index % 17:02d}",
        "scene": ["Kitchen", "Living room", "Bedroom", "Garage"][index % 4],
        "quality": str(1 + index % 7),
        "relevance": str(1 + index % 7),
        "verified": "Yes",
        # commas inside quoted fields, as in the real Charades scripts
        "script": f"A person enters, does {len(video.segments)} synthetic action(s), and leaves.",
        "objects": "box;chair;table",
        "descriptions": "A synthetic person moves around, then stops.",
        "actions": actions,
        "length": f"{video.duration_s:.2f}",
    }


def write_world(videos: list[SyntheticVideo], params: Any, root: Path, world: str) -> dict[str, Any]:
    """Write features and annotations of ``videos`` under ``root`` (which must exist).

    ``params`` is the world's parameter dataclass (written to ``dataset.json`` with ``world``, so
    that a folder is reused only for the same world and parameters).
    """
    for modality in videos[0].features:
        (root / modality).mkdir(parents=True, exist_ok=True)
    for v in videos:
        for modality, arr in v.features.items():
            np.save(root / modality / f"{v.video_id}.npy", arr)
    names = class_names(params.classes)
    (root / "Charades_v1_classes.txt").write_text(
        "".join(f"c{i:03d} {n}\n" for i, n in enumerate(names)), encoding="utf-8"
    )
    for subset, filename in (("training", "Charades_v1_train.csv"), ("testing", "Charades_v1_test.csv")):
        with (root / filename).open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(CHARADES_CSV_COLUMNS))
            writer.writeheader()
            for i, v in enumerate(videos):
                if v.subset == subset:
                    writer.writerow(_charades_row(v, i))
    pdan = {
        v.video_id: {
            "subset": v.subset,
            "duration": v.duration_s,
            "actions": [[s.label, s.start_s, s.end_s] for s in v.segments],
        }
        for v in videos
    }
    (root / "annotations.json").write_text(json.dumps(pdan), encoding="utf-8")
    if any(v.true_segments is not None for v in videos):
        # what happened, where the annotations above are noisy: for analysis, never read in training
        exact = {
            v.video_id: {
                **pdan[v.video_id],
                "actions": [[s.label, s.start_s, s.end_s] for s in (v.true_segments or v.segments)],
            }
            for v in videos
        }
        (root / "annotations_exact.json").write_text(json.dumps(exact), encoding="utf-8")
    segs = [(v, s) for v in videos for s in v.segments]
    info = {
        "format_version": FORMAT_VERSION,
        "world": world,
        "params": asdict(params),
        "class_names": names,
        "feature_dims": {m: int(a.shape[1]) for m, a in videos[0].features.items()},
        "counts": {
            "videos": len(videos),
            "training": sum(v.subset == "training" for v in videos),
            "testing": sum(v.subset == "testing" for v in videos),
            "segments": len(segs),
            "segments_past_end": sum(s.end_s > v.duration_s for v, s in segs),
            "videos_without_actions": sum(not v.segments for v in videos),
            "positive_step_fraction": float(np.mean([v.labels.mean() for v in videos])),
        },
    }
    (root / "dataset.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info
