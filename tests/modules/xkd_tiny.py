"""The tiny XKD recipe that the module and pipeline tests share (4 x 32 x 32 video in 2 x 16 x 16
tubelets, 32 spectrogram frames, one decoder block): one step runs in about a second on a CPU.

Import as ``from tests.modules.xkd_tiny import SAMPLES, TINY_XKD, TinyClips`` and add what a test
varies; :class:`TinyClips` is a dataset of samples of these shapes.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

#: 32 spectrogram frames with the XKD STFT (hop 143, centred)
SAMPLES = 143 * 31

TINY_XKD = dict(
    encoder_size="tiny",
    num_frames=4,
    img_size=32,
    tubelet=2,
    patch_size=16,
    audio_frames=32,
    audio_local_frames=16,
    decoder_dim=32,
    decoder_depth=1,
    decoder_heads=2,
    head_hidden_dim=32,
    head_bottleneck_dim=16,
    head_out_dim=64,
    warmup_epochs=0.0,
    lr=1e-3,
    recon_log_every_n_epochs=0,
)


class TinyClips(Dataset):
    """``n`` samples of the tiny recipe's shapes, drawn from seed 0 (video, local views, [probe
    view,] audio, in that order): ``video`` (3, 4, 32, 32), ``video_local`` (local_views, 3, 2, 16,
    16), ``video_probe`` like ``video`` (with ``probe``), ``audio`` (SAMPLES,), ``label``."""

    def __init__(
        self, n: int = 4, local_views: int = 1, probe: bool = False, labels: list[int] | None = None
    ) -> None:
        g = torch.Generator().manual_seed(0)
        self.video = torch.randn(n, 3, 4, 32, 32, generator=g)
        self.local = torch.randn(n, local_views, 3, 2, 16, 16, generator=g)
        self.probe = torch.randn(n, 3, 4, 32, 32, generator=g) if probe else None
        self.audio = torch.randn(n, SAMPLES, generator=g) * 0.1
        self.label = torch.tensor(labels[:n]) if labels is not None else torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, i: int) -> dict:
        item = {
            "video": self.video[i],
            "video_local": self.local[i],
            "audio": self.audio[i],
            "label": self.label[i],
        }
        if self.probe is not None:
            item["video_probe"] = self.probe[i]
        return item
