"""Write tiny real media files at test time (good ones and broken ones).

Frames carry their own index as a 2x5 grid of black/white cells (10 bits, survives lossy
coding), so a test can tell exactly which frame a decoder returned: see ``frame_index_of``.
Audio is a sine tone. Everything here is small and fast (a few ms per file).

Import from tests as ``from tests.data.media import write_video`` (the suite runs with
``--import-mode=importlib`` from the repository root).
"""

from __future__ import annotations

import io
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

_BITS_ROWS, _BITS_COLS = 2, 5
MAX_INDEX = 2 ** (_BITS_ROWS * _BITS_COLS) - 1


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height); an int means a square frame."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def index_frame(index: int, width: int, height: int) -> np.ndarray:
    """An RGB uint8 frame whose 2x5 cell grid spells ``index`` in binary (MSB first)."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"frame index {index} does not fit in {_BITS_ROWS * _BITS_COLS} bits")
    frame = np.zeros((height, width, 3), np.uint8)
    bits = [(index >> (9 - b)) & 1 for b in range(_BITS_ROWS * _BITS_COLS)]
    for b, bit in enumerate(bits):
        r, c = divmod(b, _BITS_COLS)
        y0, y1 = r * height // _BITS_ROWS, (r + 1) * height // _BITS_ROWS
        x0, x1 = c * width // _BITS_COLS, (c + 1) * width // _BITS_COLS
        frame[y0:y1, x0:x1] = 235 if bit else 16
    return frame


def frame_index_of(frame: np.ndarray) -> int:
    """Read back the index written by ``index_frame`` (from the centre of each cell)."""
    frame = np.asarray(frame)
    height, width = frame.shape[:2]
    index = 0
    for b in range(_BITS_ROWS * _BITS_COLS):
        r, c = divmod(b, _BITS_COLS)
        yc = (2 * r + 1) * height // (2 * _BITS_ROWS)
        xc = (2 * c + 1) * width // (2 * _BITS_COLS)
        patch = frame[yc - 2 : yc + 3, xc - 2 : xc + 3]
        index = (index << 1) | int(patch.mean() > 128)
    return index


def _tone(num_samples: int, sample_rate: int, freq: float, channels: int = 1) -> np.ndarray:
    t = np.arange(num_samples) / sample_rate
    mono = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(mono[None], channels, axis=0)


def _default_audio_codec(path: Path) -> str:
    return "pcm_s16le" if path.suffix.lower() in {".avi", ".wav"} else "aac"


def write_video(
    path: str | Path,
    num_frames: int = 16,
    fps: float | Fraction = 16,
    size: int | tuple[int, int] = 64,
    audio: bool = True,
    codec: str = "libx264",
    *,
    audio_codec: str | None = None,
    sample_rate: int = 16000,
    audio_channels: int = 1,
    audio_freq: float = 440.0,
    audio_duration_s: float | None = None,
    faststart: bool = False,
    gop: int | None = None,
) -> Path:
    """Write a video whose frame ``i`` shows ``index_frame(i)``; optional sine-tone audio.

    ``fps`` may be fractional (``Fraction(30000, 1001)``). The audio lasts as long as the video
    unless ``audio_duration_s`` says otherwise. ``gop`` sets the keyframe interval (to test
    seeking); ``faststart`` moves the mp4 index to the front.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = _size(size)
    rate = Fraction(fps).limit_denominator(1001)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        vstream = container.add_stream(codec, rate=rate)
        vstream.width, vstream.height = width, height
        vstream.pix_fmt = "yuv420p"
        if codec == "libx264":
            vstream.options = {"preset": "ultrafast", "crf": "18"}
        if gop is not None:
            vstream.codec_context.gop_size = gop
        astream = None
        if audio:
            acodec = audio_codec or _default_audio_codec(path)
            astream = container.add_stream(acodec, rate=sample_rate)
            astream.layout = "mono" if audio_channels == 1 else "stereo"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, width, height), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        if astream is not None:
            seconds = audio_duration_s if audio_duration_s is not None else float(num_frames / rate)
            _encode_audio(
                container, astream, round(seconds * sample_rate), sample_rate, audio_channels, audio_freq
            )
    return path


def _encode_audio(container, astream, num_samples: int, sample_rate: int, channels: int, freq: float) -> None:
    samples = _tone(num_samples, sample_rate, freq, channels)
    fmt = astream.codec_context.format.name if astream.codec_context.format else "fltp"
    chunk = 1024
    for start in range(0, num_samples, chunk):
        part = samples[:, start : start + chunk]
        if fmt.startswith("s16"):
            data = (part * 32767).astype(np.int16)
            data = data.T.reshape(1, -1) if not fmt.endswith("p") else data
        else:
            data = part if fmt.endswith("p") else part.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(data), format=fmt, layout="mono" if channels == 1 else "stereo"
        )
        frame.sample_rate = sample_rate
        frame.pts = start
        container.mux(astream.encode(frame))
    container.mux(astream.encode(None))


def write_wav(
    path: str | Path,
    duration_s: float = 1.0,
    sample_rate: int = 16000,
    channels: int = 1,
    freq: float = 440.0,
) -> Path:
    """A 16-bit PCM WAV sine tone, written with the standard library (independent of PyAV)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = _tone(round(duration_s * sample_rate), sample_rate, freq, channels)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes((samples.T * 32767).astype("<i2").tobytes())
    return path


def write_audio_only(path: str | Path, duration_s: float = 1.0, sample_rate: int = 16000) -> Path:
    """An mp4 (or m4a) holding only an AAC track: a "video" file with no video stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        astream = container.add_stream("aac", rate=sample_rate)
        astream.layout = "mono"
        _encode_audio(container, astream, round(duration_s * sample_rate), sample_rate, 1, 440.0)
    return path


def write_video_only(path: str | Path, num_frames: int = 16, fps: float = 16, size: int = 64) -> Path:
    """A video without an audio stream."""
    return write_video(path, num_frames, fps, size, audio=False)


def write_one_frame_video(path: str | Path, size: int = 64) -> Path:
    """A valid video with exactly one frame (and a short tone)."""
    return write_video(path, num_frames=1, fps=16, size=size, audio=True)


def write_truncated(path: str | Path, keep_fraction: float = 0.5, faststart: bool = False, **kwargs) -> Path:
    """A real video cut to ``keep_fraction`` of its bytes, as an interrupted download leaves it.

    Without ``faststart`` the mp4 index (moov) is at the end and is lost; with it, the index
    survives and promises frames whose data is gone.
    """
    path = Path(path)
    kwargs.setdefault("num_frames", 48)
    write_video(path, faststart=faststart, **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return path


def write_zero_byte(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_garbage(path: str | Path, num_bytes: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a video extension (a misnamed or corrupt download)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, num_bytes, dtype=np.uint8).tobytes())
    return path


def write_stereo(
    path: str | Path,
    left: float = 0.8,
    right: float = 0.4,
    duration_s: float = 1.0,
    sample_rate: int = 16000,
    freq: float = 300.0,
) -> Path:
    """A stereo sine tone, the same phase in both channels at peak amplitudes ``left``/``right``.

    Written with PyAV in the format the suffix names (``.flac``, ``.wav``...), 16-bit samples. The
    true mono mix (the channel mean) peaks at ``(left + right) / 2``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = round(duration_s * sample_rate)
    tone = np.sin(2 * np.pi * freq * np.arange(n) / sample_rate)
    samples = np.stack([left * tone, right * tone])  # (2, n)
    codec = "flac" if path.suffix.lower() == ".flac" else "pcm_s16le"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = "stereo"
        stream.format = "s16"
        for start in range(0, n, 4096):
            part = (samples[:, start : start + 4096] * 32767).round().astype(np.int16)
            frame = av.AudioFrame.from_ndarray(part.T.reshape(1, -1).copy(), format="s16", layout="stereo")
            frame.sample_rate = sample_rate
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_elementary_stream(
    path: str | Path,
    codec: str = "mpeg4",
    num_frames: int = 120,
    fps: Fraction = Fraction(30000, 1001),
    size: int = 64,
) -> Path:
    """A raw video elementary stream (no container timing), whatever the file is called.

    ``codec="mpeg4"`` writes an MPEG-4 Part 2 stream (the ``m4v`` muxer: the parser gives its
    packets timestamps), ``"libx264"`` an Annex-B H.264 stream (the ``h264`` muxer: no timestamps
    at all, only packet durations). Re-encoded dataset mirrors save these under an ``.mp4`` name;
    FFmpeg then reports its fallback 25 fps while the stream runs at ``fps``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps)
    with av.open(str(path), mode="w", format="m4v" if codec == "mpeg4" else "h264") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, size, size), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


class _Unseekable(io.RawIOBase):
    """A write-only file that cannot seek back, like a pipe or a capture that was cut off."""

    def __init__(self, f) -> None:
        self.f = f

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:
        return self.f.write(b)


def write_streamed_avi(path: str | Path, num_frames: int = 100, fps: int = 25, size: int = 64) -> Path:
    """An MPEG-4 AVI with PCM audio, interleaved, written the way a recorder streams it.

    The writer cannot seek back, so the file has no ``idx1`` index and its header keeps the
    placeholders (RIFF/movi sizes 0xFFFFFFFF, stream length 2**30 frames): an AVI without an index,
    as an interrupted capture or a piped ``ffmpeg`` leaves it. Every frame is still in the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_rate = 16000
    per_frame = sample_rate // fps
    with open(path, "wb") as raw, av.open(_Unseekable(raw), mode="w", format="avi") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        video.codec_context.gop_size = 12
        audio = container.add_stream("pcm_s16le", rate=sample_rate)
        audio.layout = "mono"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, size, size), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
            tone = _tone(per_frame * (i + 1), sample_rate, 440.0)[:, per_frame * i :]
            samples = av.AudioFrame.from_ndarray((tone * 32767).astype(np.int16), format="s16", layout="mono")
            samples.sample_rate = sample_rate
            samples.pts = per_frame * i
            container.mux(audio.encode(samples))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


def strip_avi_index(path: str | Path) -> Path:
    """Remove the ``idx1`` chunk of an AVI in place (and its "has index" header flag)."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    at = data.rfind(b"idx1")
    if at < 0:
        raise ValueError(f"{path} has no idx1 chunk")
    size = int.from_bytes(data[at + 4 : at + 8], "little")
    del data[at : at + 8 + size + (size & 1)]
    data[4:8] = (len(data) - 8).to_bytes(4, "little")  # RIFF size
    avih = data.find(b"avih") + 8
    flags = int.from_bytes(data[avih + 12 : avih + 16], "little") & ~0x10  # AVIF_HASINDEX
    data[avih + 12 : avih + 16] = flags.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path
