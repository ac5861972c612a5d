"""The synthetic generators' mp4 writer: the bytes are a function of the frames alone."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from xmkd.data.synthetic.av import SyntheticAVParams, plan_clips, render_clip
from xmkd.data.synthetic.media import write_mp4

SCRIPT = """
import sys
import numpy as np
from pathlib import Path
from xmkd.data.synthetic.media import write_mp4
frames = np.load(sys.argv[1])
write_mp4(Path(sys.argv[2]), frames, 8.0, 23)
"""


def generator_clips(n: int = 12) -> list[np.ndarray]:
    """Frames of the synthetic AV generator's 32-pixel test clips (they exposed the SIMD over-read)."""
    p = SyntheticAVParams(seed=3, classes=3, clips_per_class=4, duration=2.0, size=32, fps=8.0)
    specs = [
        {"params": asdict(p), "label": c["label"], "group": c["group"], "index": c["index"]}
        for c in plan_clips(p)
    ]
    return [render_clip(spec)[0] for spec in specs[:n]]


def test_same_bytes_whatever_the_heap_holds(tmp_path: Path) -> None:
    # x264's SIMD kernels read past small planes: with them, what earlier allocations left on the
    # heap changed the bitstream of 32-pixel clips (the synthetic generator's test set).
    clips = generator_clips()
    reference = []
    for i, frames in enumerate(clips):
        write_mp4(tmp_path / f"ref{i}.mp4", frames, 8.0, 23)
        reference.append((tmp_path / f"ref{i}.mp4").read_bytes())
    rng = np.random.default_rng(0)
    junk: list[np.ndarray] = []
    for trial in range(6):
        junk.append(rng.integers(0, 255, int(rng.integers(2**16, 2**22)), dtype=np.uint8))
        if trial % 2:
            junk.clear()
        for i, frames in enumerate(clips):
            path = tmp_path / f"t{trial}_{i}.mp4"
            write_mp4(path, frames, 8.0, 23)
            assert path.read_bytes() == reference[i], (trial, i)


def test_same_bytes_in_a_fresh_process(tmp_path: Path) -> None:
    frames = generator_clips(1)[0]
    np.save(tmp_path / "frames.npy", frames)
    write_mp4(tmp_path / "here.mp4", frames, 8.0, 23)
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "frames.npy"), str(tmp_path / "there.mp4")],
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert (tmp_path / "here.mp4").read_bytes() == (tmp_path / "there.mp4").read_bytes()
