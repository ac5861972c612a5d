"""Decoding video frames and audio samples with PyAV, in presentation order, with clear errors.

Time convention: ``start_s`` counts from the first frame (video) or first sample (audio) of the
stream, so ``start_s=0`` is always the first frame. Containers disagree about where "zero" is
(the UCF101 AVIs give their first frame pts 1 because of packed B-frames; mp4 files can start at
a non-zero pts); anchoring at the first frame keeps a native-rate read free of duplicated frames.

Frame choice: the frame returned for time ``t`` is the one whose presentation interval
``[pts, next pts)`` contains ``t``. Frames are collected with their pts and ordered by pts, never
by the order the decoder emits them (some AVIs emit them out of order).

Frame rate: the timestamps decide. Raw MPEG-4 / H.264 elementary streams (often saved under an
``.mp4`` name) carry no container timing and report FFmpeg's fallback 25 fps while their
timestamps run at 29.97; where the container's rate disagrees with the first packets' timestamps,
the timestamps' rate is used (:func:`_sample_timing`), and frame counts come from the stream.

Damaged files: a seek that raises or lands past the data (an index pointing past a truncated
end, a stream without timestamps) falls back to decoding from the start of the file, said once in
the log. A file whose data ends before the length its header declares is reported as
``truncated: data ends at X s of Y s`` wherever a read needs the missing part.

Every failure is raised as :class:`xmkd.errors.MediaError` (or :class:`MissingAudioError`) that
names the file; raw PyAV exceptions never escape.
"""

from __future__ import annotations

import heapq
import io
import itertools
import logging
import math
import os
import stat
import statistics
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from xmkd.errors import MediaError, MissingAudioError

log = logging.getLogger(__name__)

# Decoders whose container timestamps are unreliable (packed B-frames in AVI) can emit frames
# slightly out of pts order; after the first frame past the clip we decode this many more so a
# late, earlier-pts frame is not missed. Streams without B-frames, and containers that carry
# presentation timestamps (whose decoders emit frames in that order), stop at the first frame past
# the clip, unless a frame out of order has been seen.
REORDER_MARGIN = 4
# Containers whose packet timestamps are not presentation times (AVI stores decode order).
_DECODE_ORDER_FORMATS = frozenset({"avi"})
# Before a clip, frames that no other frame refers to are not decoded (skip_frame=NONREF), up to
# this many native frame durations before the clip's first target: the frame covering that target
# is later than this in a constant-rate stream (see _decode_range for the check where it is not).
_SKIP_GUARD_FRAMES = 2
# Packets demuxed from the start to find the first frame's pts and the timestamps' frame rate.
_ORIGIN_PACKETS = 16
# Seconds decoded before an audio clip's start after a seek (decoder and resampler warm-up).
AUDIO_PREROLL_S = 0.2
# A decoded stream that ends this much earlier than the container says is treated as truncated.
_TRUNCATION_SLACK_S = 0.5
# The container's frame rate gives way to the timestamps' when the two differ by more than this.
_RATE_TOLERANCE = 0.02
# A header frame count this large is a placeholder, not a count: FFmpeg's AVI muxer writes 2**30
# when it cannot seek back to fill in the length (a streamed or interrupted recording).
_PLACEHOLDER_FRAMES = 2**30


@dataclass(frozen=True)
class VideoInfo:
    """What a container holds in its first video stream (and first audio stream, if any).

    ``fps`` is the container's rate unless the stream's timestamps disagree with it
    (``fps_from_timestamps``). ``duration_s`` is the length the container declares; where the
    header has no usable length or frame count (raw streams, AVIs without an index, mkv), the
    packets are counted (demuxed, not decoded) and ``num_frames``/``duration_s`` come from them.
    ``data_end_s`` is set only for a truncated file: where its video data really ends (then
    ``num_frames`` counts the frames present).
    """

    duration_s: float
    fps: float
    num_frames: int
    has_audio: bool
    codec: str
    width: int
    height: int
    audio_sample_rate: int | None
    fps_from_timestamps: bool = False
    data_end_s: float | None = None


@dataclass(frozen=True)
class EncodedMedia:
    """An encoded media file held in memory (e.g. read from a shard), decoded like the file itself.

    ``name`` is what errors and logs name (the original file, so a bad clip in a shard is still
    reported by the path it came from); ``data`` is the file's bytes, unchanged.
    """

    name: str
    data: bytes

    def __repr__(self) -> str:
        return f"EncodedMedia({self.name!r}, {len(self.data)} bytes)"


MediaSource = str | os.PathLike | EncodedMedia


def _source_path(source: MediaSource) -> Path:
    """The path that names ``source`` in errors."""
    return Path(source.name) if isinstance(source, EncodedMedia) else Path(source)


def _check_file(path: Path) -> None:
    """A MediaError saying why ``path`` cannot be a media file, if it is missing, a folder or empty."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise MediaError(path, "file not found") from None
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(path, "is a directory, expected a media file")
    if st.st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")


@contextmanager
def _open(path: MediaSource) -> Iterator[av.container.InputContainer]:
    """Open ``path`` for reading; any PyAV/OS failure becomes a MediaError naming the file."""
    p = _source_path(path)
    try:
        if isinstance(path, EncodedMedia):
            if not path.data:
                raise MediaError(p, "empty file (0 bytes)")
            container = av.open(io.BytesIO(path.data), mode="r")
        else:
            container = av.open(os.fspath(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        if not isinstance(path, EncodedMedia):
            _check_file(p)  # a missing file, a folder or an empty file: say so (checked on failure only)
        raise MediaError(p, f"cannot open as a media container ({_short(e)})") from None
    try:
        yield container
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as e:
        raise MediaError(p, f"decode error ({_short(e)})") from None
    finally:
        container.close()


def _short(e: BaseException) -> str:
    """A one-line description of a PyAV error without its errno noise."""
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return f"{type(e).__name__}: {msg}".strip()


def _fps_of(stream: av.video.stream.VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _stream_duration_s(stream: av.stream.Stream, container: av.container.InputContainer) -> float | None:
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


# ---------------------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class _Timing:
    """How a video stream's frames map to time, from its header and its first packets.

    ``origin``: pts of the first presented frame. ``fps``: the native rate (the timestamps' where
    the header disagrees, ``from_timestamps``). ``frame_pts``: one frame in pts units. ``timed``:
    the packets carry pts (raw H.264 streams carry none: such a stream cannot be seeked, and its
    frames are timed by counting). ``sampled``/``last_pts``: non-empty packets demuxed and their
    largest pts, so that a count of the whole stream can go on from there.
    """

    origin: float
    fps: float | None
    frame_pts: float
    timed: bool
    from_timestamps: bool
    sampled: int
    last_pts: float | None


def _timestamp_rate(pts: list[int], time_base: float) -> float | None:
    """Frame rate implied by packet timestamps: one over their typical step, if steps are regular.

    The steps between sorted distinct pts are regular when three quarters of them are within 1% of
    the median (a B-frame not yet demuxed leaves one double step); variable-rate starts give None.
    """
    # Plain Python: on 16 numbers, each numpy call costs more than the arithmetic (it ran per clip).
    distinct = sorted({float(p) for p in pts})
    steps = [b - a for a, b in itertools.pairwise(distinct)]
    if len(steps) < 2:
        return None
    step = statistics.median(steps)
    if step <= 0 or sum(abs(d - step) <= 0.01 * step for d in steps) < 0.75 * len(steps):
        return None
    return 1.0 / (step * time_base)


def _sample_timing(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _Timing:
    """Origin and native frame rate from the header and the first packets (demuxed, not decoded).

    Why: a raw elementary stream has no container timing, and FFmpeg then reports a fallback
    average rate (25 fps) while the stream's own timestamps (or, without timestamps, its packet
    durations) run at 29.97. Reading at the fallback rate skips one frame in six and pads by
    repeating; so where the two disagree by more than ``_RATE_TOLERANCE`` the timestamps win.
    """
    tb = float(stream.time_base) if stream.time_base else 0.0
    pts: list[int] = []
    durations: list[int] = []
    sampled = 0
    for pk in container.demux(stream):
        if pk.pts is not None and not pk.is_discard:
            pts.append(pk.pts)
        if pk.size > 0 and not pk.is_discard:
            sampled += 1
            if pk.duration:
                durations.append(pk.duration)
        if max(len(pts), sampled) >= _ORIGIN_PACKETS:
            break
    timed = bool(pts)
    ts_rate: float | None = None
    if tb > 0 and timed:
        ts_rate = _timestamp_rate(pts, tb)
    elif tb > 0 and durations:
        ts_rate = 1.0 / (float(np.median(durations)) * tb)
    header = _fps_of(stream)
    from_ts = ts_rate is not None and (header is None or abs(ts_rate / header - 1.0) > _RATE_TOLERANCE)
    fps = ts_rate if from_ts else header
    return _Timing(
        origin=float(min(pts)) if timed else float(stream.start_time or 0),
        fps=fps,
        frame_pts=1.0 / (fps * tb) if fps and tb > 0 else 0.0,
        timed=timed,
        from_timestamps=from_ts,
        sampled=sampled,
        last_pts=float(max(pts)) if timed else None,
    )


#: The timing of files read before, by (path, size, mtime, inode): see _clip_timing
_TIMING_CACHE: dict[tuple[str, int, int, int], _Timing] = {}
#: Files remembered per process (about 300 bytes each); the oldest entry goes first.
_TIMING_CACHE_SIZE = 1 << 16


def _clip_timing(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, source: MediaSource
) -> _Timing:
    """:func:`_sample_timing` of ``source``, remembered per file.

    Why: a data loader reads every file again each epoch, and the timing comes from demuxing the
    file's first packets before the seek to the clip (a tenth of a 16-frame clip's time on a
    UCF101 AVI). The key holds the size, modification time and inode, so a file rewritten in place
    is sampled afresh. Files in memory (:class:`EncodedMedia`) are sampled every time.
    """
    key = None
    if not isinstance(source, EncodedMedia):
        st = os.stat(source)
        key = (os.fspath(source), st.st_size, st.st_mtime_ns, st.st_ino)
        found = _TIMING_CACHE.get(key)
        if found is not None:
            return found
    timing = _sample_timing(container, stream)
    if key is not None:
        if len(_TIMING_CACHE) >= _TIMING_CACHE_SIZE:
            _TIMING_CACHE.pop(next(iter(_TIMING_CACHE)), None)
        _TIMING_CACHE[key] = timing
    return timing


def _declared_duration_s(
    stream: av.video.stream.VideoStream, container: av.container.InputContainer, fps: float | None
) -> float | None:
    """The length the header promises, to tell a truncated file from a clip past the end.

    An AVI's stream length is its writer's frame count, while FFmpeg's duration for an AVI whose
    index is lost only covers what it has seen; other containers' durations are used as they are
    (an mp4's sample count includes edit-list pre-roll). A placeholder length promises nothing.
    """
    if stream.frames >= _PLACEHOLDER_FRAMES:
        return None
    if container.format.name == "avi" and stream.frames > 0 and fps:
        return stream.frames / fps
    return _stream_duration_s(stream, container)


def _indexed_data_end(
    stream: av.video.stream.VideoStream, container: av.container.InputContainer, timing: _Timing
) -> tuple[float, int] | None:
    """(seconds, frames) of video data present when the container's index points past the file's end.

    An mp4 cut short keeps its index (``moov`` in front) and promises frames whose bytes are gone;
    the index alone tells where the data stops, without decoding. None when nothing is missing
    (or PyAV is too old to expose the index).
    """
    entries = getattr(stream, "index_entries", None)
    size = getattr(container, "size", 0) or 0
    if entries is None or size <= 0 or len(entries) < 2:
        return None
    last = entries[len(entries) - 1]
    if last.pos + last.size <= size:
        return None
    present = [e.timestamp for e in entries if e.pos + e.size <= size]
    if not present or not timing.fps:
        return 0.0, 0
    end = (max(present) - timing.origin) * float(stream.time_base) + 1.0 / timing.fps
    return max(0.0, end), len(present)


def _count_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, timing: _Timing
) -> tuple[int, float]:
    """(frames, seconds) of the whole stream by demuxing every packet (no decoding).

    Goes on from the packets :func:`_sample_timing` already read. Without timestamps the length
    is the count at the native rate.
    """
    count, last = timing.sampled, timing.last_pts
    for pk in container.demux(stream):
        if pk.size == 0 or pk.is_discard:
            continue
        count += 1
        if pk.pts is not None and (last is None or pk.pts > last):
            last = pk.pts
    if timing.fps is None:
        raise MediaError(container.name, "frame rate unknown: no usable rate in the header or timestamps")
    if last is None:
        return count, count / timing.fps
    return count, (last - timing.origin) * float(stream.time_base) + 1.0 / timing.fps


def probe(path: MediaSource) -> VideoInfo:
    """Read the metadata of a video file without decoding frames.

    The rate is checked against the first packets' timestamps (see :func:`_sample_timing`). Where
    the header has no usable frame count or length, or its count and length disagree (an AVI
    whose index is lost or which was cut short), the packets are counted instead: this reads the
    file but does not decode it. A truncated file keeps its declared ``duration_s`` and gets
    ``data_end_s``, so that reads in the missing part say "truncated".
    """
    p = _source_path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(p, "no video stream")
        stream = container.streams.video[0]
        cc = stream.codec_context
        timing = _sample_timing(container, stream)
        fps = timing.fps
        if fps is None and timing.sampled == 0:
            raise MediaError(p, "video stream has no packets")
        declared = _declared_duration_s(stream, container, fps)
        header_frames = stream.frames if 0 < stream.frames < _PLACEHOLDER_FRAMES else None
        header_s = _stream_duration_s(stream, container) if stream.frames < _PLACEHOLDER_FRAMES else None
        trusted = (
            fps is not None
            and not timing.from_timestamps
            and header_frames is not None
            and header_s is not None
            and abs(header_frames / fps - header_s) <= max(2.0 / fps, 0.05 * header_s)
        )
        data_end: float | None = None
        if trusted:
            assert header_frames is not None and header_s is not None and fps is not None
            frames, duration = header_frames, header_s
            indexed = _indexed_data_end(stream, container, timing)
            if indexed is not None:
                data_end, frames = indexed
        else:
            frames, data_s = _count_packets(container, stream, timing)
            if frames == 0:
                raise MediaError(p, "video stream has no packets")
            duration = declared if declared is not None else data_s
            if declared is not None and data_s < declared - _TRUNCATION_SLACK_S:
                data_end = data_s
        assert fps is not None
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            duration_s=float(duration),
            fps=float(fps),
            num_frames=int(max(frames, 1)),
            has_audio=audio is not None,
            codec=cc.name,
            width=int(cc.width),
            height=int(cc.height),
            audio_sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
            fps_from_timestamps=timing.from_timestamps,
            data_end_s=data_end,
        )


def select_frames(pts: list[int] | np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index into ``pts`` of the frame whose presentation interval covers each target time.

    ``pts`` may be in any order (decoder order); ``targets`` are in the same units. A target
    before the first frame gets the first frame. Pure function, so that the rule is testable on
    its own.
    """
    pts = np.asarray(pts)
    order = np.argsort(pts, kind="stable")
    sorted_pts = pts[order]
    pos = np.searchsorted(sorted_pts, np.asarray(targets), side="right") - 1
    return order[np.clip(pos, 0, len(pts) - 1)]


# ------------------------------------------------------------------------------- colour conversion
_thread_local = threading.local()


def _reformatter() -> VideoReformatter:
    """This thread's swscale context, kept from frame to frame and from clip to clip.

    Why: ``frame.to_ndarray(format="rgb24")`` builds a new swscale context for every frame, and PyAV
    asks that context for automatic threading, so each frame paid for a context set-up and a thread
    pool: 2-10 ms per 320x240 frame on a 2-core machine, against 0.05-0.3 ms with one kept context
    on one thread. One per thread because a context is not safe to share between threads.
    """
    found = getattr(_thread_local, "reformatter", None)
    if found is None:
        found = _thread_local.reformatter = VideoReformatter()
    return found


def frames_to_rgb(
    frames: Sequence[av.VideoFrame],
    size: tuple[int, int] | None = None,
    interpolation: str = "BILINEAR",
    format: str = "rgb24",
) -> np.ndarray:
    """``(N, H, W, C)`` uint8 from decoded frames: converted, and resized to ``size`` (height, width), in
    one swscale pass per frame, on this thread's kept context (see :func:`_reformatter`).

    Without ``size`` the pixels equal ``frame.to_ndarray(format=format)``'s. ``format`` is a packed
    swscale format (``rgb24``: C=3, ``gray``: C=1).
    """
    if not frames:
        raise ValueError("no frames to convert")
    height, width = size if size is not None else (frames[0].height, frames[0].width)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    reformatter = _reformatter()
    out: np.ndarray | None = None
    for i, frame in enumerate(frames):
        converted = reformatter.reformat(
            frame, width=width, height=height, format=format, interpolation=interpolation, threads=1
        )
        pixels = packed_plane_view(converted)
        if out is None:
            out = np.empty((len(frames), *pixels.shape), np.uint8)
        out[i] = pixels  # the one copy: swscale's output straight into the clip
    assert out is not None
    return out


def packed_plane_view(frame: av.VideoFrame) -> np.ndarray:
    """A packed frame's pixels as (H, W, C) uint8, a view of its buffer (no copy).

    ``to_ndarray`` copies the plane into a new array, which the caller then copies into its clip: one
    full pass over the frame more than needed. The rows of the plane are ``line_size`` bytes apart
    (swscale pads them), so the view is strided; it lives as long as ``frame``.
    """
    channels = PACKED_CHANNELS.get(frame.format.name)
    if channels is None:
        raise ValueError(
            f"not a packed 8-bit format: {frame.format.name}; expected {sorted(PACKED_CHANNELS)}"
        )
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
    return rows[:, : frame.width * channels].reshape(frame.height, frame.width, channels)


#: channels of the packed 8-bit formats :func:`frames_to_rgb` converts to
PACKED_CHANNELS = {"rgb24": 3, "bgr24": 3, "gray": 1, "gray8": 1, "rgba": 4, "bgra": 4}


# ------------------------------------------------------------------------------------------ clips
_from_start_logged = False


def _note_decoding_from_start(path: Path, why: str) -> None:
    """Say once per process (at WARNING) that a file is read from its start; later ones at DEBUG."""
    global _from_start_logged
    if not _from_start_logged:
        _from_start_logged = True
        log.warning(
            "%s: %s; decoding from the start of the file instead (slower). Further files that "
            "need this are logged at DEBUG level.",
            path,
            why,
        )
    else:
        log.debug("%s: %s; decoding from the start of the file", path, why)


def read_clip(
    path: MediaSource,
    start_s: float,
    num_frames: int,
    fps: float | None = None,
    *,
    threads: bool = True,
    return_pts: bool = False,
    size: tuple[int, int] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Decode ``num_frames`` RGB frames at times ``start_s + i / fps`` as uint8 ``(T, H, W, 3)``.

    ``fps=None`` reads at the stream's native rate (its timestamps' rate where the container's
    disagrees). The decoder seeks to the keyframe before ``start_s`` and stops soon after the last
    needed frame; a seek that fails or lands past the data falls back to decoding from the start
    of the file. Frames come back in presentation order whatever order the container delivers.

    A clip that runs past the end of the video is padded by looping over the frames that were
    available from ``start_s`` (frame ``i`` of the output repeats frame ``i % k`` of the ``k``
    frames inside the video), the usual choice of video loaders for short clips. A ``start_s`` at
    or past the end raises :class:`MediaError`; so does a clip that needs the missing part of a
    truncated file ("truncated: data ends at X s of Y s").

    ``threads=True`` enables FFmpeg's automatic (frame/slice) threading; ``threads=False`` decodes
    on the calling thread alone, as inside many DataLoader workers on few cores. ``return_pts=True``
    also returns the pts (in seconds from the stream start, before looping) of each returned frame,
    which tests use to check the order. ``size=(height, width)`` resizes while converting to RGB
    (swscale, bilinear, one pass; see :func:`frames_to_rgb`); None keeps the decoded size.
    """
    p = _source_path(path)
    _check_clip_request(p, start_s, num_frames)
    with _open(path) as container:
        return _clip_in(container, path, start_s, num_frames, fps, threads, return_pts, size)


def _check_clip_request(p: Path, start_s: float, num_frames: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if start_s < 0 or not math.isfinite(start_s):
        raise MediaError(p, f"clip start {start_s} s is negative or not finite")


def _clip_in(
    container: av.container.InputContainer,
    source: MediaSource,
    start_s: float,
    num_frames: int,
    fps: float | None,
    threads: bool,
    return_pts: bool,
    size: tuple[int, int] | None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """:func:`read_clip` on an open container (which it leaves open, wherever it was read to)."""
    p = _source_path(source)
    if not container.streams.video:
        raise MediaError(p, "no video stream")
    stream = container.streams.video[0]
    _set_threads(stream, threads)
    tb = stream.time_base
    timing = _clip_timing(container, stream, source)
    native_fps = timing.fps
    if native_fps is None and fps is None:
        raise MediaError(p, "frame rate unknown; pass fps explicitly")
    step = 1.0 / (fps or native_fps)
    origin = timing.origin
    # Target times in pts units, nudged by 1% of a native frame so that a time that falls
    # exactly on a frame boundary (i / fps with fps == native) is not lost to rounding.
    # Plain Python floats: on a clip's 16 numbers each numpy call costs more than its arithmetic.
    tol_s = 0.01 / (native_fps or fps)
    tb_s = float(tb)
    targets = [origin + (start_s + step * i + tol_s) / tb_s for i in range(num_frames)]
    declared = _declared_duration_s(stream, container, native_fps or fps)

    decoded = _decode_range(container, stream, timing, targets, True, size=size) if timing.timed else None
    if decoded is None or isinstance(decoded, str):
        why = decoded or "the stream has no timestamps (a raw elementary stream cannot be seeked)"
        _note_decoding_from_start(p, why)
        with _open(source) as fresh:
            fresh_stream = fresh.streams.video[0]
            _set_threads(fresh_stream, threads)
            decoded = _decode_range(fresh, fresh_stream, timing, targets, False, size=size)
    assert not isinstance(decoded, str)
    assembled, end_pts = decoded
    if assembled.clip is None:
        raise MediaError(p, "no decodable video frames")
    data_end_s = (end_pts - origin) * tb_s if math.isfinite(end_pts) else math.inf

    # Targets past the end of the decoded stream are padded by looping.
    k = len(assembled.slot_pts)  # the targets below end_pts, which the assembler filled
    truncated = declared is not None and data_end_s < declared - _TRUNCATION_SLACK_S
    if k == 0:
        if truncated:
            raise MediaError(p, _truncated(data_end_s, declared, start_s))
        limit = f" (data ends at {data_end_s:.2f} s)"
        raise MediaError(p, f"clip start {start_s:.3f} s is at or past the end of the video{limit}")
    if k < num_frames and truncated:
        raise MediaError(p, _truncated(data_end_s, declared, start_s))
    clip = assembled.clip
    loop = [i % k for i in range(num_frames)]
    if k < num_frames:
        clip = clip.index_select(0, torch.tensor(loop))
    if return_pts:
        pts_s = torch.tensor([(assembled.slot_pts[i] - origin) * tb_s for i in loop], dtype=torch.float64)
        return clip, pts_s
    return clip


def _set_threads(stream: av.video.stream.VideoStream, threads: bool) -> None:
    """FFmpeg's automatic frame/slice threading, or exactly one decoding thread.

    PyAV's default is slice threading with one thread per core, which starts a thread pool at
    every open for streams that rarely have slices to share out; one thread is what a DataLoader
    worker on a busy machine wants.
    """
    if threads:
        stream.thread_type = "AUTO"
    else:
        stream.thread_count = 1


def _truncated(data_end_s: float, declared_s: float | None, start_s: float) -> str:
    return f"truncated: data ends at {data_end_s:.2f} s of {declared_s:.2f} s (clip from {start_s:.2f} s)"


class _ClipAssembler:
    """Decoded frames in, in presentation order; the clip's RGB frames out, one slot per target.

    A frame covers the targets from its pts up to the next frame's (the first frame also those
    before it). It is converted into its first slot, and copied to the others, as soon as the next
    frame shows which targets it covers; then it is let go. Why: a frame held until the clip is
    complete keeps its buffer out of the decoder's pool, and a pool that grows by a clip's worth of
    fresh buffers per file costs more than the conversion (5-17 % of a 16-frame clip on real files).
    """

    def __init__(self, targets: Sequence[float], size: tuple[int, int] | None) -> None:
        self.targets = targets
        self.size = size
        self.clip: torch.Tensor | None = None  # (len(targets), H, W, 3), allocated at the first frame
        self.slot_pts: list[float] = []  # pts of the frame in each filled slot, in order
        self.pending: tuple[av.VideoFrame, float] | None = None
        self.last_pts = -math.inf
        self._out = np.empty((0, 0, 0, 3), np.uint8)  # the clip's memory, as numpy
        self._reformatter = _reformatter()

    def feed(self, frame: av.VideoFrame, pts: float) -> bool:
        """Take the next frame; False where it presents before one already taken (out of order)."""
        if pts < self.last_pts:
            return False
        self.last_pts = pts
        if self.pending is not None:
            self._settle(pts)
        elif self.clip is None:
            height, width = self.size if self.size is not None else (frame.height, frame.width)
            self._out = np.empty((len(self.targets), height, width, 3), np.uint8)
            self.clip = torch.from_numpy(self._out)
        self.pending = (frame, pts)
        return True

    def finish(self, end_pts: float) -> None:
        """The stream (or the part decoded) ends at ``end_pts``: the last frame covers up to there."""
        if self.pending is not None:
            self._settle(end_pts)

    def _settle(self, next_pts: float) -> None:
        assert self.pending is not None
        frame, pts = self.pending
        self.pending = None
        targets = self.targets
        first = j = len(self.slot_pts)
        while j < len(targets) and targets[j] < next_pts:
            j += 1
        if j > first:
            self._convert(frame, first)
            if j > first + 1:
                self._out[first + 1 : j] = self._out[first]
            self.slot_pts.extend([pts] * (j - first))

    def _convert(self, frame: av.VideoFrame, slot: int) -> None:
        """:func:`frames_to_rgb` of one frame into its slot (at the first frame's size, or the one
        asked for), without that function's per-call checks: this runs once per frame."""
        height, width = self._out.shape[1:3]
        converted = self._reformatter.reformat(
            frame, width=width, height=height, format="rgb24", interpolation="BILINEAR", threads=1
        )
        self._out[slot] = packed_plane_view(converted)


_Decoded = tuple[_ClipAssembler, float]


def _pass_on(
    assembler: _ClipAssembler,
    held: list[tuple[float, int, av.VideoFrame]],
    before: tuple[av.VideoFrame, float] | None,
    before_fed: bool,
    keep: int,
) -> bool:
    """Feed the assembler the held frames (a heap by pts) beyond ``keep``, preceded the first time
    by ``before``, the frame that covers the clip's start. False: a frame came out of order."""
    if not before_fed and before is not None and not assembler.feed(*before):
        return False
    while len(held) > keep:
        pts, _, frame = heapq.heappop(held)
        if not assembler.feed(frame, pts):
            return False
    return True


def _decode_range(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    timing: _Timing,
    targets: Sequence[float],
    seek: bool,
    skip_nonref: bool = True,
    size: tuple[int, int] | None = None,
    hold: float | None = None,
) -> _Decoded | str:
    """Decode the frames needed for ``targets`` (pts units, increasing) into a :class:`_ClipAssembler`.

    Returns the assembler (its slots filled for the targets before the end of the decoded stream)
    and the pts where the decoded stream ends (last pts plus one frame duration, or +inf when
    decoding stopped early because the clip was complete). Of the frames before the first target
    only the latest, which covers it, is kept.

    ``seek=True`` seeks to the keyframe before the clip first; when that seek raises or lands
    where it must not (past the data, or after the clip start: imprecise or lost indexes), the
    reason is returned instead, for the caller to decode a fresh container from the start
    (``seek=False``), where frames without pts are timed by counting from the origin.

    After a seek, the frames between the keyframe and the clip that nothing refers to (most
    B-frames) are not decoded (``skip_nonref``); in the rare stream where the frame covering the
    clip's start would fall among them (a gap in a variable-rate stream) the range is decoded
    again without skipping.

    Frames reach the assembler in pts order through a buffer of ``hold`` frames: none where the
    decoder emits presentation order, :data:`REORDER_MARGIN` for a decode-order container with
    B-frames. A frame that comes later than that (an out-of-order decoder not announced by the
    stream) sends the range through again with every frame held and sorted at the end.
    """
    first_t, last_t = float(targets[0]), float(targets[-1])
    origin = timing.origin
    if seek:
        try:
            container.seek(math.floor(first_t), stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError as e:
            return f"seeking raised {_short(e)}"
    # In decode-order containers a packet's pts can be up to REORDER_MARGIN frames off its frame's
    # presentation time: skipping keeps that much further from the clip, and stopping waits that
    # much longer where the decoder may reorder (B-frames).
    decode_order_pts = container.format.name in _DECODE_ORDER_FORMATS
    skip_before = -math.inf
    if seek and skip_nonref and timing.timed and timing.frame_pts > 0:
        guard = _SKIP_GUARD_FRAMES + (REORDER_MARGIN if decode_order_pts else 0)
        skip_before = first_t - guard * timing.frame_pts
    margin = REORDER_MARGIN if decode_order_pts and stream.codec_context.has_b_frames else 0
    if hold is None:  # from the start of the file there is no second pass: hold every frame
        hold = margin if seek else math.inf
    # A one-thread decoder without B-frames returns each packet's frame before taking the next:
    # a next packet presented after the clip need not be decoded to know that the clip is complete.
    plan = _DecodePlan(skip_before)
    if (
        seek
        and timing.timed
        and not stream.codec_context.has_b_frames
        and stream.codec_context.thread_count == 1
    ):
        plan.stop_after = last_t
    assembler = _ClipAssembler(targets, size)
    held: list[tuple[float, int, av.VideoFrame]] = []  # a heap by (pts, arrival)
    before: tuple[av.VideoFrame, float] | None = None  # the latest frame at or before the clip start
    before_fed = False
    in_order = True
    last_out = -math.inf
    max_pts = -math.inf
    past = 0
    last_dur = 0.0
    count = 0
    for frame in _decode_skipping(container, stream, plan):
        if frame is None:  # the next packet presents after the clip
            past = 1
            break
        pts: float = frame.pts
        if pts is None:
            if frame.dts is not None:
                pts = frame.dts
            elif not seek:
                pts = origin + count * timing.frame_pts  # no timestamps: the count is the time
            else:
                pts = max_pts + (timing.frame_pts or 1) if max_pts > -math.inf else origin
        count += 1
        if seek and count == 1 and pts > first_t and first_t >= origin:
            return "the seek landed after the clip start"
        if pts < last_out:
            margin = REORDER_MARGIN  # this decoder does emit frames out of order
            plan.stop_after = math.inf
        last_out = pts
        if pts <= first_t:
            if before is None or pts > before[1]:
                if before_fed and before is not None:
                    in_order = False  # a later cover of the clip start, after the clip began
                before = (frame, pts)
        elif pts <= last_t and in_order:
            heapq.heappush(held, (pts, count, frame))
            if len(held) > hold:
                in_order = _pass_on(assembler, held, before, before_fed, keep=int(hold))
                before_fed = True
        if not in_order:
            break
        if pts > max_pts:
            last_dur = pts - max_pts if max_pts > -math.inf else 0.0
            max_pts = pts
        if pts > last_t:
            past += 1
            if past > margin:
                break
    if seek and count == 0:
        return "the seek landed past the data"
    if before is not None and before[1] < skip_before:
        return _decode_range(container, stream, timing, targets, seek, False, size, hold)
    in_order = in_order and _pass_on(assembler, held, before, before_fed, keep=0)
    if not in_order:
        # A frame came later than the buffer allows (only after a seek: from the start every frame
        # is held): decode the range again, holding every frame and sorting them at the end.
        return _decode_range(container, stream, timing, targets, seek, skip_nonref, size, math.inf)
    if past > 0:
        end_pts = math.inf
    elif assembler.last_pts > -math.inf:
        # Decoding hit the end of the stream: the last frame lasts one frame duration.
        end_pts = max_pts + (timing.frame_pts or last_dur or 1)
    else:
        end_pts = -math.inf
    assembler.finish(end_pts)
    return assembler, end_pts


@dataclass
class _DecodePlan:
    """What :func:`_decode_skipping` may leave out: frames nothing refers to presented before
    ``skip_before``, and every packet from the first one presented after ``stop_after`` on."""

    skip_before: float
    stop_after: float = math.inf


def _decode_skipping(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, plan: _DecodePlan
) -> Iterator[av.VideoFrame | None]:
    """``container.decode(stream)``, leaving out what ``plan`` allows; None: stopped at a packet
    presented after ``plan.stop_after`` (read as each packet comes, so the caller can lift it).

    FFmpeg reads the codec context's ``skip_frame`` as each packet is sent (frame threads copy it
    then), so it is set per packet; from the first packet whose dts reaches ``skip_before`` on,
    every later packet presents later, and all are decoded.
    """
    codec = stream.codec_context
    skip_before = plan.skip_before
    skipping = skip_before > -math.inf
    decoded = False
    try:
        for packet in container.demux(stream):
            if decoded and packet.size > 0 and packet.pts is not None and packet.pts > plan.stop_after:
                yield None
                return
            if skipping:
                if packet.dts is not None and packet.dts >= skip_before:
                    skipping = False
                    codec.skip_frame = "DEFAULT"
                else:
                    early = packet.pts is not None and packet.pts < skip_before
                    codec.skip_frame = "NONREF" if early else "DEFAULT"
            for frame in packet.decode():
                decoded = True
                yield frame
    finally:
        if skip_before > -math.inf:
            codec.skip_frame = "DEFAULT"


def read_audio(
    path: MediaSource,
    start_s: float,
    duration_s: float,
    sample_rate: int = 16000,
) -> torch.Tensor:
    """Decode ``round(duration_s * sample_rate)`` mono float32 samples starting at ``start_s``.

    Works on the audio track of a video container (mp3 in AVI, AAC in mp4) and on wav/flac/mp3
    files. FFmpeg's resampler (``av.AudioResampler``) changes the rate; channels are then mixed to
    mono as their mean (:func:`_downmix`), not by FFmpeg's mono downmix, which is sqrt(2) too loud.
    Samples past the end of the audio are zeros, so the length is always exact; a ``start_s``
    at or past the end raises :class:`MediaError`, no audio stream :class:`MissingAudioError`.
    """
    p = _source_path(path)
    _check_audio_request(p, start_s, duration_s)
    with _open(path) as container:
        audio = _audio_in(container, p, start_s, duration_s, sample_rate, at_start=True)
    assert audio is not None
    return audio


def read_av_clip(
    path: MediaSource,
    start_s: float,
    num_frames: int,
    audio_s: float,
    fps: float | None = None,
    *,
    sample_rate: int = 16000,
    threads: bool = True,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``read_clip(path, start_s, num_frames, fps)`` and ``read_audio(path, start_s, audio_s)`` from one
    open container: the same frames and samples as the two calls, with one open (and one probe of
    the streams) instead of two, except for a clip that starts within ``AUDIO_PREROLL_S`` of the
    audio's start (read as :func:`read_audio` does, from a second open). Raises
    :class:`MissingAudioError` where the file has no audio.
    """
    p = _source_path(path)
    _check_clip_request(p, start_s, num_frames)
    _check_audio_request(p, start_s, audio_s)
    with _open(path) as container:
        if not container.streams.audio:
            raise MissingAudioError(p, "no audio stream")
        frames = _clip_in(container, path, start_s, num_frames, fps, threads, False, size)
        assert isinstance(frames, torch.Tensor)
        audio = _audio_in(container, p, start_s, audio_s, sample_rate, at_start=False)
    if audio is None:  # a clip within the audio pre-roll of the start: a fresh container reads it
        audio = read_audio(path, start_s, audio_s, sample_rate)
    return frames, audio


def _check_audio_request(p: Path, start_s: float, duration_s: float) -> None:
    if duration_s <= 0 or not math.isfinite(duration_s):
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    if start_s < 0 or not math.isfinite(start_s):
        raise MediaError(p, f"audio start {start_s} s is negative or not finite")


def _audio_in(
    container: av.container.InputContainer,
    p: Path,
    start_s: float,
    duration_s: float,
    sample_rate: int,
    at_start: bool,
) -> torch.Tensor | None:
    """:func:`read_audio` on an open container; ``at_start``: nothing has been read from it yet.

    None where a container that has been read already cannot give the same samples as a fresh one.
    """
    n_out = round(duration_s * sample_rate)
    if not container.streams.audio:
        raise MissingAudioError(p, "no audio stream")
    stream = container.streams.audio[0]
    tb = stream.time_base
    origin_s = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    if not at_start and origin_s + start_s <= AUDIO_PREROLL_S:
        # Near the start the audio is decoded from the first packet without a seek; a seek back
        # there lands after the codec's priming packet (AAC in mp4 starts at -1024) and the first
        # samples would come out of a cold decoder. Only a fresh container reads them right.
        return None
    chunks, first_s = _decode_audio(container, stream, origin_s + start_s, n_out, sample_rate, origin_s)
    if first_s is None and start_s > 0:
        # Seek landed nowhere useful (some demuxers cannot seek audio): decode from the start.
        chunks, first_s = _decode_audio(container, stream, None, n_out, sample_rate, origin_s, start_s)
    if first_s is None:
        raise MediaError(p, f"audio start {start_s:.3f} s is at or past the end of the audio")
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    offset = round((origin_s + start_s - first_s) * sample_rate)
    if offset >= len(samples):
        raise MediaError(p, f"audio start {start_s:.3f} s is at or past the end of the audio")
    if offset < 0:  # the stream starts after start_s: leading silence
        samples = np.concatenate([np.zeros(-offset, np.float32), samples])
        offset = 0
    out = samples[offset : offset + n_out]
    if len(out) < n_out:
        out = np.concatenate([out, np.zeros(n_out - len(out), np.float32)])
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def _decode_audio(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    seek_s: float | None,
    n_out: int,
    sample_rate: int,
    origin_s: float,
    start_rel_s: float | None = None,
) -> tuple[list[np.ndarray], float | None]:
    """Decode and resample from a seek point; returns mono chunks and the time of the first sample.

    Stops once enough samples past ``seek_s`` are collected. ``seek_s=None`` decodes from the
    start of the file (``start_rel_s`` then says where the clip starts, to know when to stop).
    A clip within the pre-roll of the start is read without a seek: ``container`` must be fresh.
    """
    tb = float(stream.time_base)  # float, not Fraction: Fraction arithmetic per frame is slow
    if seek_s is not None and seek_s > AUDIO_PREROLL_S:
        # Seek a little early: mp3/AAC decoders need a frame or two of history (bit reservoir,
        # overlapped MDCT) before their output is exact, and the resampler's filter warms up.
        container.seek(int((seek_s - AUDIO_PREROLL_S) / tb), stream=stream, backward=True, any_frame=False)
    elif seek_s is None:
        container.seek(0, stream=stream, backward=True, any_frame=False)
    # planar float at the source's channel layout: the channels are averaged here, see _downmix
    resampler = av.AudioResampler(format="fltp", rate=sample_rate)
    chunks: list[np.ndarray] = []
    first_s: float | None = None
    want_until = (seek_s if seek_s is not None else (start_rel_s or 0.0)) + (n_out + 1) / sample_rate
    last_end_s = -math.inf
    for frame in container.decode(stream):
        if first_s is None:
            first_s = frame.pts * tb if frame.pts is not None else origin_s
            frame, first_s = _align_to_grid(frame, first_s, origin_s, sample_rate, stream.time_base)
        for out in resampler.resample(frame):
            chunks.append(_downmix(out.to_ndarray()))
        if frame.pts is not None:
            last_end_s = frame.pts * tb + frame.samples / frame.sample_rate
        if last_end_s >= want_until + 0.05:
            break
    for out in resampler.resample(None):
        chunks.append(_downmix(out.to_ndarray()))
    if first_s is not None and not chunks:
        first_s = None
    return chunks, first_s


def _downmix(planes: np.ndarray) -> np.ndarray:
    """Mono as the mean of the channels of a planar ``(channels, samples)`` float array.

    FFmpeg's own stereo-to-mono matrix adds each channel at -3 dB (1/sqrt(2)), so a signal present
    in both channels comes out sqrt(2) louder than in either (a normal speech FLAC reached 1.107,
    past full scale). The mean keeps a centred signal at its level and never exceeds full scale.
    """
    if planes.shape[0] == 1:
        return planes.reshape(-1)
    return planes.mean(axis=0, dtype=np.float32)


def _align_to_grid(
    frame: av.AudioFrame, first_s: float, origin_s: float, out_rate: int, time_base: Fraction
) -> tuple[av.AudioFrame, float]:
    """Drop the first few input samples so resampling starts on the stream's output-sample grid.

    After a seek the first decoded sample rarely falls on a multiple of ``1 / out_rate`` from the
    stream start; resampling from there would shift every output sample by a fraction of a
    sample, so the same clip read from different seek points would differ (by up to ~10% of the
    waveform for 44.1 -> 16 kHz). Input and output grids meet every ``1 / gcd(in, out)`` seconds
    (10 ms for 44.1 -> 16 kHz); starting there makes seeked reads match a read from the start.
    """
    in_rate = frame.sample_rate
    period = in_rate // math.gcd(in_rate, out_rate)  # input samples per common grid period
    n0 = round((first_s - origin_s) * in_rate)
    skip = (-n0) % period
    if skip == 0 or skip >= frame.samples:
        return frame, first_s
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    data = data[:, skip:] if frame.format.is_planar else data[:, skip * channels :]
    aligned = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(data), format=frame.format.name, layout=frame.layout.name
    )
    aligned.sample_rate = in_rate
    aligned.time_base = time_base
    if frame.pts is not None:
        aligned.pts = frame.pts + round(skip / in_rate / time_base)
    return aligned, first_s + skip / in_rate


# ----------------------------------------------------------------------------------------------
# whole videos

# A decoded stream that ends this much earlier than the container declares is truncated.
_TRUNCATION_SLACK_S = 0.5


@dataclass
class WholeVideo:
    """Frames resampled to ``fps``: ``frames`` (N, H, W, C) uint8 (C = 1 grey or 3 RGB)."""

    frames: np.ndarray
    fps: float
    duration_s: float
    native_fps: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def resampled_frame_count(duration_s: float, fps: float) -> int:
    """``ceil(duration * fps)``: the times ``i / fps`` in ``[0, duration)`` (1e-6 tolerance)."""
    return max(1, math.ceil(duration_s * fps - 1e-6))


def output_size(height: int, width: int, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) after resizing: ``None`` keeps the size, an int is the short side (aspect kept,
    rounded to even numbers for codecs), a pair is the exact (H, W)."""
    if size is None:
        return height, width
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    scale = size / min(height, width)
    h, w = round(height * scale / 2) * 2, round(width * scale / 2) * 2
    return max(2, h), max(2, w)


def decode_video(
    path: str | os.PathLike,
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    grey: bool = False,
) -> WholeVideo:
    """Decode a whole video once, in presentation order, resampled to ``fps`` and resized (flow and
    feature extraction read whole videos through this; training clips through :func:`read_clip`).

    ``fps=None`` keeps the native rate. Frames are resized while converting (swscale, area
    filter), so memory is ``N * H * W * C`` bytes at the output size. Raises
    :class:`MediaError` naming the file for anything that cannot be decoded, including a stream
    that ends well before the duration its container declares (truncated file).
    """
    p = Path(path)
    info = probe(p)  # raises MediaError for missing/empty/undecodable containers
    h, w = output_size(info.height, info.width, size)
    fmt = "gray" if grey else "rgb24"
    pts_list: list[int] = []
    arrays: list[np.ndarray] = []
    try:
        with av.open(str(p), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = stream.time_base
            # raw elementary streams carry no timestamps: then each frame lasts one native frame
            frame_ticks = max(1, round(1.0 / (info.fps * float(tb))))
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is None:
                    pts = pts_list[-1] + frame_ticks if pts_list else 0
                pts_list.append(int(pts))
                # one kept swscale context (frame.to_ndarray builds one per frame: several ms each)
                arrays.append(frames_to_rgb([frame], (h, w), "AREA", fmt)[0])
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as e:
        raise MediaError(p, f"decode error ({type(e).__name__}: {e})") from None
    if not arrays:
        raise MediaError(p, "no decodable video frames")
    pts = np.asarray(pts_list, dtype=np.int64)
    origin = int(pts.min())
    span_pts = float(pts.max() - origin)
    native = info.fps
    frame_pts = 1.0 / (native * float(tb))
    duration = (span_pts + frame_pts) * float(tb)
    if duration < info.duration_s - _TRUNCATION_SLACK_S:
        raise MediaError(
            p,
            f"video data ends at {duration:.2f} s but the container declares {info.duration_s:.2f} s (truncated?)",
        )
    rate = float(fps) if fps else native
    n = resampled_frame_count(duration, rate)
    # 1% of a native frame of tolerance, so that i / fps on a frame boundary is not lost to rounding
    targets = origin + (np.arange(n) / rate + 0.01 / native) / float(tb)
    idx = select_frames(pts, targets)
    frames = np.stack([arrays[int(i)] for i in idx])
    if frames.ndim == 3:
        frames = frames[..., None]
    return WholeVideo(frames=frames, fps=rate, duration_s=float(duration), native_fps=float(native))


__all__ = [
    "AUDIO_PREROLL_S",
    "REORDER_MARGIN",
    "EncodedMedia",
    "MediaSource",
    "VideoInfo",
    "WholeVideo",
    "decode_video",
    "frames_to_rgb",
    "output_size",
    "probe",
    "read_audio",
    "read_av_clip",
    "read_clip",
    "resampled_frame_count",
    "select_frames",
]
