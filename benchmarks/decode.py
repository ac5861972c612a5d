"""One 16-frame clip per item, file opened per item as a data loader does: xmkd against torchcodec and decord.

Readers compared on the same clips (``--frames`` consecutive frames at the native rate from a random
first frame), each with one decoding thread:

- ``xmkd``: :func:`xmkd.data.io.video_io.read_clip` (``threads=False``);
- ``torchcodec``: ``VideoDecoder(seek_mode="exact", num_ffmpeg_threads=1).get_frames_in_range``;
- ``decord``: ``VideoReader(num_threads=1).get_batch``.

Files: the real files of ``../shared/realdata`` (UCF101 XviD AVIs, h264 mp4s) and Kinetics-like
clips written here with PyAV: 10 s, 340 pixels high, 30 fps, h264 with libx264's defaults (the
encoder Kinetics' download scripts use: a keyframe every 250 frames, B-frames) and AAC audio,
made from the frames of two real videos so that the content is real.

Repetitions are interleaved: for every start, each reader reads the same clip, in an order that
rotates from start to start, so load on the machine falls on all of them alike. Per file the table
gives the median and min wall milliseconds per clip and the ratio reference / xmkd of the medians
(above 1: xmkd is faster); a second table gives the same for the process's CPU time, which other
work on a shared machine disturbs less. A third table pairs the readers clip by clip: the median over clips of
reference / xmkd CPU time, and the ratio of the totals. A clip's cost depends on how far it starts
from a keyframe, so a ratio of medians swings with the clips drawn; the paired ratio does not. Every reader's frames are checked against a full decode sorted by presentation time (the
largest mean absolute difference of a frame, in grey levels: 0 where the frames are right).

torchcodec loads FFmpeg's shared libraries at run time. Where the system has none, it is run on the
FFmpeg libraries bundled with PyAV (the same FFmpeg build that xmkd decodes with), and the table
says so; where that fails too it is skipped with the reason. ``pip install -e .[bench]`` installs
both references.

    .venv/bin/python benchmarks/decode.py [--clips 100] [--frames 16] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from xmkd.data.io.video_io import probe, read_clip

REALDATA = Path(os.environ.get("XMKD_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
REAL_FILES = [
    "ucf101/videos/v_ApplyEyeMakeup_g01_c01.avi",
    "ucf101/videos/v_BaseballPitch_g01_c01.avi",
    "av/v_GGSY1Qvo990.mp4",
    "video/demo.mp4",
]
# (name, source video in realdata) of the Kinetics-like clips made at run time
KINETICS_LIKE = [
    ("kinetics_like_demo.mp4", "video/demo.mp4"),
    ("kinetics_like_av.mp4", "av/v_GGSY1Qvo990.mp4"),
]
# Set in the child process that runs torchcodec on PyAV's FFmpeg, so it does not re-launch itself.
_CHILD_FLAG = "XMKD_BENCH_DECODE_PYAV_FFMPEG"

Reader = Callable[[Path, int, int], np.ndarray]


# ------------------------------------------------------------------------------------- the files
def make_kinetics_like(src: Path, dst: Path, seconds: float = 10.0, height: int = 340, fps: int = 30) -> Path:
    """Re-encode ``src``'s frames as a Kinetics-like clip: h264 (libx264 defaults) + AAC 44.1 kHz stereo.

    The source's frames are scaled to ``height`` (width keeps the aspect, even) and repeated from the
    start where the source is shorter than ``seconds``; the audio is the source's where it has one,
    otherwise a tone with noise.
    """
    with av.open(str(src)) as c:
        frames = [f.reformat(format="yuv420p") for f in c.decode(video=0)]
        width = 2 * round(frames[0].width * height / frames[0].height / 2)
        audio = _source_audio(src)
    n_frames = round(seconds * fps)
    with av.open(str(dst), mode="w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=44100, layout="stereo")
        for i in range(n_frames):
            frame = frames[i % len(frames)].reformat(width=width, height=height, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for pk in v.encode(frame):
                out.mux(pk)
        for pk in v.encode(None):
            out.mux(pk)
        samples = np.resize(audio, (2, round(seconds * 44100))).astype(np.float32)
        for j in range(0, samples.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, j : j + 1024]), format="fltp", layout="stereo"
            )
            af.sample_rate, af.pts, af.time_base = 44100, j, Fraction(1, 44100)
            for pk in a.encode(af):
                out.mux(pk)
        for pk in a.encode(None):
            out.mux(pk)
    return dst


def _source_audio(src: Path) -> np.ndarray:
    """(2, N) float32 at 44.1 kHz: the source's audio track, or a tone with noise where it has none."""
    with av.open(str(src)) as c:
        if c.streams.audio:
            rs = av.AudioResampler(format="fltp", layout="stereo", rate=44100)
            chunks = [o.to_ndarray() for f in c.decode(audio=0) for o in rs.resample(f)]
            chunks += [o.to_ndarray() for o in rs.resample(None)]
            return np.concatenate(chunks, axis=1)
    t = np.arange(44100 * 2) / 44100
    rng = np.random.default_rng(0)
    mono = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)
    return np.stack([mono, mono]).astype(np.float32)


# ----------------------------------------------------------------------------------- the readers
def xmkd_reader(fps_of: dict[Path, float]) -> Reader:
    def read(path: Path, first: int, n: int) -> np.ndarray:
        return read_clip(path, first / fps_of[path], n, threads=False).numpy()

    return read


def decord_reader() -> Reader | str:
    try:
        import decord
    except ImportError as e:
        return f"not installed ({e}); pip install -e .[bench]"

    def read(path: Path, first: int, n: int) -> np.ndarray:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        return vr.get_batch(list(range(first, first + n))).asnumpy()

    return read


def torchcodec_reader(probe_file: Path) -> Reader | str:
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as e:
        return f"not installed ({e}); pip install -e .[bench]"

    def read(path: Path, first: int, n: int) -> np.ndarray:
        dec = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=1, dimension_order="NHWC")
        return dec.get_frames_in_range(first, first + n).data.numpy()

    try:
        read(probe_file, 0, 1)  # torchcodec loads FFmpeg on first use
    except Exception as e:  # any failure to load FFmpeg means: not available here
        return f"cannot load FFmpeg's shared libraries ({type(e).__name__})"
    return read


def pyav_ffmpeg_dir(tmp: Path) -> Path | None:
    """A folder of ``libavcodec.so.N``-style links to the FFmpeg libraries bundled with PyAV.

    PyAV's wheel ships FFmpeg under hashed names (``libavcodec-5e6b81c2.so.62``); torchcodec asks
    for the plain sonames. None where PyAV's libraries are not found (a PyAV built from source).
    """
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    if not libs.is_dir():
        return None
    out = tmp / "ffmpeg"
    out.mkdir(exist_ok=True)
    found = 0
    for lib in sorted(libs.iterdir()):
        stem, _, rest = lib.name.partition("-")
        if stem in (
            "libavutil",
            "libavcodec",
            "libavformat",
            "libavdevice",
            "libavfilter",
            "libswscale",
            "libswresample",
        ):
            major = rest.split(".so.")[1].split(".")[0]
            (out / f"{stem}.so.{major}").symlink_to(lib)
            found += 1
    return out if found == 7 else None


# ------------------------------------------------------------------------------------- timing
def time_file(
    path: Path, readers: dict[str, Reader], clips: int, num_frames: int, rng: random.Random
) -> dict[str, object]:
    """Interleaved per-clip times (ms) of every reader on one file, and how far its frames are off."""
    info = probe(path)
    reference = presentation_order(path)
    firsts = [rng.randrange(0, max(1, len(reference) - num_frames)) for _ in range(clips)]
    names = list(readers)
    for name in names:  # warm-up: file cache, codec tables, lazy imports
        readers[name](path, firsts[0], num_frames)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    off: dict[str, float] = {name: 0.0 for name in names}
    for k, first in enumerate(firsts):
        order = names[k % len(names) :] + names[: k % len(names)]
        for name in order:
            t, c = time.perf_counter(), time.process_time()
            out = readers[name](path, first, num_frames)
            times[name].append(1e3 * (time.perf_counter() - t))
            cpu[name].append(1e3 * (time.process_time() - c))
            off[name] = max(off[name], frame_mad(reference[first : first + num_frames], out))
    row: dict[str, object] = {"fps": info.fps, "frames": info.num_frames, "codec": info.codec}
    for name in names:
        row[name] = {
            "median_ms": statistics.median(times[name]),
            "min_ms": min(times[name]),
            "cpu_median_ms": statistics.median(cpu[name]),
            "max_frame_mad": off[name],
        }
        if name != "xmkd":
            row[f"{name}_ratio"] = statistics.median(times[name]) / statistics.median(times["xmkd"])
            row[f"{name}_cpu_ratio"] = statistics.median(cpu[name]) / statistics.median(cpu["xmkd"])
            # Per clip, both readers read the same frames: the paired ratio does not swing with which
            # clips the medians land on (a clip's cost depends on its distance from the keyframe).
            row[f"{name}_cpu_ratio_paired"] = statistics.median(
                r / x for r, x in zip(cpu[name], cpu["xmkd"], strict=True)
            )
            row[f"{name}_cpu_ratio_total"] = sum(cpu[name]) / sum(cpu["xmkd"])
    return row


def presentation_order(path: Path) -> np.ndarray:
    """Every frame of ``path`` as RGB, sorted by pts: the frames a clip from index ``i`` must hold."""
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    frames.sort(key=lambda x: x[0])
    return np.stack([a for _, a in frames])


def frame_mad(a: np.ndarray, b: np.ndarray) -> float:
    """Largest per-frame mean absolute difference in grey levels (inf where shapes differ)."""
    if a.shape != b.shape:
        return float("inf")
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).reshape(len(a), -1).mean(axis=1)
    return float(d.max())


# --------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clips", type=int, default=100, help="random clips per file (interleaved repetitions)"
    )
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    rerun_on_pyav_ffmpeg()
    ffmpeg_note = "the system's FFmpeg"
    if os.environ.get(_CHILD_FLAG) is not None:
        version = ".".join(map(str, av.library_versions["libavcodec"]))
        ffmpeg_note = f"PyAV's bundled FFmpeg (libavcodec {version}; the system has none)"

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = {rel: REALDATA / rel for rel in REAL_FILES if (REALDATA / rel).exists()}
        if not files:
            print(f"note: no real files under {REALDATA} (set XMKD_REALDATA)")
        for name, src in KINETICS_LIKE:
            if (REALDATA / src).exists():
                files[f"generated/{name}"] = make_kinetics_like(REALDATA / src, tmp / name)
        if not files:
            raise SystemExit("no files to decode")

        readers: dict[str, Reader] = {"xmkd": xmkd_reader({p: probe(p).fps for p in files.values()})}
        skipped: dict[str, str] = {}
        for name, make in (
            ("torchcodec", lambda: torchcodec_reader(next(iter(files.values())))),
            ("decord", decord_reader),
        ):
            reader = make()
            if isinstance(reader, str):
                skipped[name] = reader
            else:
                readers[name] = reader

        rng = random.Random(args.seed)
        results = {
            name: time_file(path, readers, args.clips, args.frames, rng) for name, path in files.items()
        }

    refs = [r for r in readers if r != "xmkd"]
    versions = {"av": av.__version__, "python": platform.python_version()}
    for name in refs:
        versions[name] = __import__(name).__version__
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"one {args.frames}-frame clip per item, file opened per item, 1 thread; {args.clips} interleaved "
        f"random clips per file; ms per clip, median (min); ratio = reference median / xmkd median (>1: xmkd faster)"
    )
    print(
        f"versions: {versions}; torchcodec on {ffmpeg_note}; load average at the end {load:.2f} on {os.cpu_count()} cores"
    )
    for name, why in skipped.items():
        print(f"{name}: skipped, {why}")
    header = f"{'file':42s} {'xmkd':>16s}" + "".join(f" {r:>16s} {'ratio':>6s}" for r in refs)
    print(header)
    for name, r in results.items():
        line = f"{name:42s} {_cell(r['xmkd']):>16s}"
        for ref in refs:
            line += f" {_cell(r[ref]):>16s} {r[f'{ref}_ratio']:6.2f}"
        print(line)
    # Process CPU time is what a busy machine disturbs least (each reader runs on one thread).
    print("same clips, CPU ms per clip (median) and ratio of CPU medians:")
    for name, r in results.items():
        line = f"{name:42s} {r['xmkd']['cpu_median_ms']:16.1f}"
        for ref in refs:
            line += f" {r[ref]['cpu_median_ms']:16.1f} {r[f'{ref}_cpu_ratio']:6.2f}"
        print(line)
    print("same clips, CPU ratio per clip paired (median over clips) and of the totals:")
    for name, r in results.items():
        line = f"{name:42s}"
        for ref in refs:
            line += f" {ref:>12s} {r[f'{ref}_cpu_ratio_paired']:6.2f} {r[f'{ref}_cpu_ratio_total']:6.2f}"
        print(line)
    print(
        "frames against a full decode sorted by pts (largest per-frame mean absolute difference, grey levels):"
    )
    for name, r in results.items():
        print(f"  {name:40s} " + "  ".join(f"{ref} {r[ref]['max_frame_mad']:.2f}" for ref in readers))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "frames": args.frames,
            "clips": args.clips,
            "versions": versions,
            "torchcodec_ffmpeg": ffmpeg_note,
            "skipped": skipped,
            "load_average": load,
            "files": results,
        }
        args.json.write_text(json.dumps(payload, indent=1))


def _cell(t: object) -> str:
    assert isinstance(t, dict)
    return f"{t['median_ms']:.1f} ({t['min_ms']:.1f})"


def rerun_on_pyav_ffmpeg() -> None:
    """Run this benchmark again in a child process that finds PyAV's FFmpeg, where torchcodec needs one.

    Does nothing where torchcodec is absent, loads the system's FFmpeg, or where this is the child.
    The dynamic loader reads ``LD_LIBRARY_PATH`` at start-up only, hence a new process.
    """
    probe_file = REALDATA / REAL_FILES[-1]
    if os.environ.get(_CHILD_FLAG) is not None or not probe_file.exists():
        return
    try:
        import torchcodec  # noqa: F401
    except ImportError:
        return  # not installed: the table says so
    if not isinstance(torchcodec_reader(probe_file), str):
        return  # it loads the system's FFmpeg
    with tempfile.TemporaryDirectory() as tmp:
        libs = pyav_ffmpeg_dir(Path(tmp))
        if libs is None:
            return
        bundled = Path(os.path.realpath(next(libs.iterdir()))).parent  # what PyAV's FFmpeg links to
        path = [
            str(libs),
            str(bundled),
            *filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)),
        ]
        env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(path))
        check = "import sys; from torchcodec.decoders import VideoDecoder; VideoDecoder(sys.argv[1])"
        if subprocess.run(
            [sys.executable, "-c", check, str(probe_file)], env=env, capture_output=True
        ).returncode:
            return  # PyAV's FFmpeg does not suit this torchcodec either: the table says why it is skipped
        env[_CHILD_FLAG] = "1"
        raise SystemExit(subprocess.call([sys.executable, *sys.argv], env=env))


if __name__ == "__main__":
    main()
