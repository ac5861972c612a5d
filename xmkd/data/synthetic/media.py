"""Building blocks shared by the synthetic generators that write real media files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from xmkd.atomic import atomic_path


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid bilinearly upsampled (cheap texture)."""
    grid = rng.random((cells + 1, cells + 1))
    x = np.linspace(0, cells, size, endpoint=False)
    i = x.astype(int)
    f = x - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]


#: x264 settings that make the encoded bytes a function of the frames alone (see :func:`write_mp4`).
X264_DETERMINISTIC = "no-asm=1:threads=1"


def write_mp4(
    path: Path,
    frames: np.ndarray,
    fps: float,
    crf: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> None:
    """h264 (yuv420p) mp4, plus an AAC mono track when ``audio`` is given, written with PyAV.

    Written under a temporary name and renamed, so an interrupted generator never leaves a file
    that looks finished.

    The bytes depend only on the inputs: x264 runs its portable C code (``no-asm``) on one thread.
    Its SIMD kernels read past the end of small planes (32-pixel frames came out differently
    after another allocation had dirtied the heap) and differ between CPUs, so with them a seed
    would not give the same dataset in every process and on every machine. The C path costs
    about 2x the encode time, which is small beside rendering.
    """
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        vs = container.add_stream("libx264", rate=rate)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "veryfast", "crf": str(crf), "x264-params": X264_DETERMINISTIC}
        vs.codec_context.thread_count = 1  # the generators parallelise across files
        aus = None
        if audio is not None:
            aus = container.add_stream("aac", rate=sample_rate)
            aus.layout = "mono"
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))
        if aus is not None and audio is not None:
            chunk = 1024
            for start in range(0, len(audio), chunk):
                frame = av.AudioFrame.from_ndarray(
                    audio[None, start : start + chunk], format="fltp", layout="mono"
                )
                frame.sample_rate = sample_rate
                frame.pts = start
                container.mux(aus.encode(frame))
            container.mux(aus.encode(None))
