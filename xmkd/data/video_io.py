"""Decoding video frames and audio samples with PyAV, in presentation order, with clear errors.

Time convention: ``start_s`` counts from the first frame (video) or first sample (audio) of the
stream, so ``start_s=0`` is always the first frame. Containers disagree about where "zero" is
(the UCF101 AVIs give their first frame pts 1 because of packed B-frames; mp4 files can start at
a non-zero pts); anchoring at the first frame keeps a native-rate read free of duplicated frames.

Frame choice: the frame returned for time ``t`` is the one whose presentation interval
``[pts, next pts)`` contains ``t``. Frames are collected with their pts and ordered by pts, never
by the order the decoder emits them (some AVIs emit them out of order).

Every failure is raised as :class:`xmkd.errors.MediaError` (or :class:`MissingAudioError`) that
names the file; raw PyAV exceptions never escape.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from xmkd.errors import MediaError, MissingAudioError

# Decoders whose container timestamps are unreliable (packed B-frames in AVI) can emit frames
# slightly out of pts order; after the first frame past the clip we decode this many more so a
# late, earlier-pts frame is not missed. Well-formed streams cost at most this many extra frames.
REORDER_MARGIN = 4
# Packets demuxed from the start to find the first frame's pts (covers any B-frame reordering).
_ORIGIN_PACKETS = 16
# Seconds decoded before an audio clip's start after a seek (decoder and resampler warm-up).
AUDIO_PREROLL_S = 0.2
# A decoded stream that ends this much earlier than the container says is treated as truncated.
_TRUNCATION_SLACK_S = 0.5


@dataclass(frozen=True)
class VideoInfo:
    """What a container says about its first video stream (and first audio stream, if any).

    Values come from container/stream metadata; where a field is missing it is estimated from
    the others (e.g. ``num_frames = round(duration_s * fps)``), never by decoding every frame.
    """

    duration_s: float
    fps: float
    num_frames: int
    has_audio: bool
    codec: str
    width: int
    height: int
    audio_sample_rate: int | None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(path, "file not found")
    if path.is_dir():
        raise MediaError(path, "is a directory, expected a media file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")


@contextmanager
def _open(path: str | os.PathLike) -> Iterator[av.container.InputContainer]:
    """Open ``path`` for reading; any PyAV/OS failure becomes a MediaError naming the file."""
    p = Path(path)
    _check_file(p)
    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
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


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read the metadata of a video file without decoding frames.

    Where fps is missing from the headers it is estimated from the first packets' timestamps;
    where the duration is missing it is estimated from the frame count (or by demuxing packets,
    which reads the file but does not decode it).
    """
    p = Path(path)
    with _open(p) as container:
        if not container.streams.video:
            raise MediaError(p, "no video stream")
        stream = container.streams.video[0]
        cc = stream.codec_context
        fps = _fps_of(stream)
        duration = _stream_duration_s(stream, container)
        frames = stream.frames if stream.frames and stream.frames > 0 else None
        if fps is None or duration is None:
            pts = [pk.pts for pk in container.demux(stream) if pk.pts is not None]
            if not pts:
                raise MediaError(p, "video stream has no packets")
            pts.sort()
            if fps is None:
                steps = np.diff(pts[: _ORIGIN_PACKETS * 4])
                steps = steps[steps > 0]
                fps = float(1 / (np.median(steps) * stream.time_base)) if len(steps) else 25.0
            if duration is None:
                duration = float((pts[-1] - pts[0]) * stream.time_base) + 1.0 / fps
            frames = frames or len(pts)
        if frames is None:
            frames = max(1, round(duration * fps))
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            duration_s=float(duration),
            fps=float(fps),
            num_frames=int(frames),
            has_audio=audio is not None,
            codec=cc.name,
            width=int(cc.width),
            height=int(cc.height),
            audio_sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
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


def _find_origin(container: av.container.InputContainer, stream: av.stream.Stream) -> int:
    """pts of the first presented frame: the smallest pts among the first packets."""
    first: list[int] = []
    for pk in container.demux(stream):
        if pk.pts is not None and not pk.is_discard:
            first.append(pk.pts)
        if len(first) >= _ORIGIN_PACKETS:
            break
    if not first:
        return int(stream.start_time or 0)
    return min(first)


def read_clip(
    path: str | os.PathLike,
    start_s: float,
    num_frames: int,
    fps: float | None = None,
    *,
    threads: bool = True,
    return_pts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Decode ``num_frames`` RGB frames at times ``start_s + i / fps`` as uint8 ``(T, H, W, 3)``.

    ``fps=None`` reads at the stream's native rate. The decoder seeks to the keyframe before
    ``start_s`` and stops soon after the last needed frame. Frames come back in presentation
    order whatever order the container delivers them in.

    A clip that runs past the end of the video is padded by looping over the frames that were
    available from ``start_s`` (frame ``i`` of the output repeats frame ``i % k`` of the ``k``
    frames inside the video), the usual choice of video loaders for short clips. A ``start_s`` at
    or past the end raises :class:`MediaError`.

    ``threads=True`` enables FFmpeg's automatic (frame/slice) threading; turn it off inside many
    DataLoader workers on few cores. ``return_pts=True`` also returns the pts (in seconds from the
    stream start, before looping) of each returned frame, which tests use to check the order.
    """
    p = Path(path)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if start_s < 0 or not math.isfinite(start_s):
        raise MediaError(p, f"clip start {start_s} s is negative or not finite")
    with _open(p) as container:
        if not container.streams.video:
            raise MediaError(p, "no video stream")
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        tb = stream.time_base
        native_fps = _fps_of(stream)
        if native_fps is None and fps is None:
            raise MediaError(p, "frame rate unknown; pass fps explicitly")
        step = 1.0 / (fps or native_fps)
        origin = _find_origin(container, stream)
        # Target times in pts units, nudged by 1% of a native frame so that a time that falls
        # exactly on a frame boundary (i / fps with fps == native) is not lost to rounding.
        tol_s = 0.01 / (native_fps or fps)
        times_s = start_s + step * np.arange(num_frames)
        targets = origin + (times_s + tol_s) / float(tb)
        declared = _stream_duration_s(stream, container)

        frames, pts_list, end_pts = _decode_range(container, stream, origin, targets, start_s)
        if not frames:
            limit = f" (duration {declared:.2f} s)" if declared else ""
            raise MediaError(p, f"clip start {start_s:.3f} s is at or past the end of the video{limit}")

        # Targets past the end of the decoded stream are padded by looping.
        inside = targets < end_pts
        if not inside[0]:
            raise MediaError(p, f"clip start {start_s:.3f} s is at or past the end of the video")
        decoded_end_s = float((end_pts - origin) * tb)
        if not inside.all() and declared is not None and decoded_end_s < declared - _TRUNCATION_SLACK_S:
            raise MediaError(
                p,
                f"video data ends at {decoded_end_s:.2f} s but the container declares {declared:.2f} s (truncated?)",
            )
        k = int(inside.sum())
        idx = select_frames(pts_list, targets[:k])
        idx = idx[np.arange(num_frames) % k]
        chosen = {int(i) for i in idx}
        arrays = {i: frames[i].to_ndarray(format="rgb24") for i in chosen}
        clip = torch.from_numpy(np.stack([arrays[int(i)] for i in idx]))
        if return_pts:
            pts_s = torch.tensor([float((pts_list[int(i)] - origin) * tb) for i in idx], dtype=torch.float64)
            return clip, pts_s
        return clip


def _decode_range(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    origin: int,
    targets: np.ndarray,
    start_s: float,
) -> tuple[list[av.VideoFrame], list[int], float]:
    """Decode the frames needed for ``targets`` (pts units, increasing).

    Returns the kept frames, their pts, and the pts where the decoded stream ends (last pts plus
    one frame duration, or +inf when decoding stopped early because the clip was complete).
    Frames before the first target are dropped except the latest one, which may cover it.
    """
    first_t, last_t = float(targets[0]), float(targets[-1])
    seek_pts = math.floor(first_t)
    for attempt in range(2):
        # The second attempt decodes from the very start: a seek that lands after the target
        # (imprecise indexes) must not silently shift the clip.
        container.seek(seek_pts if attempt == 0 else origin, stream=stream, backward=True, any_frame=False)
        frames: list[av.VideoFrame] = []
        pts_list: list[int] = []
        before: tuple[av.VideoFrame, int] | None = None
        max_pts = -math.inf
        first_seen: int | None = None
        past = 0
        last_dur = 0
        for frame in container.decode(stream):
            pts = frame.pts
            if pts is None:
                pts = frame.dts if frame.dts is not None else (pts_list[-1] + 1 if pts_list else origin)
            if first_seen is None:
                first_seen = pts
            if pts <= first_t:
                if before is None or pts > before[1]:
                    before = (frame, pts)
            elif pts <= last_t:
                frames.append(frame)
                pts_list.append(pts)
            if pts > max_pts:
                last_dur = pts - max_pts if max_pts > -math.inf else 0
                max_pts = pts
            if pts > last_t:
                past += 1
                if past > REORDER_MARGIN:
                    break
        if first_seen is not None and first_seen > first_t and first_t >= origin and attempt == 0:
            continue  # seek overshot the clip start: redo from the beginning
        break
    if before is not None:
        frames.insert(0, before[0])
        pts_list.insert(0, before[1])
    if past > 0:
        end_pts = math.inf
    elif pts_list:
        # Decoding hit the end of the stream: the last frame lasts one frame duration.
        dur = _frame_duration_pts(stream) or last_dur or 1
        end_pts = max_pts + dur
    else:
        end_pts = -math.inf
    return frames, pts_list, end_pts


def _frame_duration_pts(stream: av.video.stream.VideoStream) -> float:
    fps = _fps_of(stream)
    if fps is None:
        return 0.0
    return float(1 / (Fraction(fps).limit_denominator(100000) * stream.time_base))


def read_audio(
    path: str | os.PathLike,
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
    p = Path(path)
    if duration_s <= 0 or not math.isfinite(duration_s):
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    if start_s < 0 or not math.isfinite(start_s):
        raise MediaError(p, f"audio start {start_s} s is negative or not finite")
    n_out = round(duration_s * sample_rate)
    with _open(p) as container:
        if not container.streams.audio:
            raise MissingAudioError(p, "no audio stream")
        stream = container.streams.audio[0]
        tb = stream.time_base
        origin_s = float(stream.start_time * tb) if stream.start_time is not None else 0.0
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


__all__ = [
    "AUDIO_PREROLL_S",
    "REORDER_MARGIN",
    "VideoInfo",
    "probe",
    "read_audio",
    "read_clip",
    "select_frames",
]
