"""The tiny XKD recipe that the module and pipeline tests share (4 x 32 x 32 video in 2 x 16 x 16
tubelets, 32 spectrogram frames, one decoder block): one step runs in about a second on a CPU.

Import as ``from tests.modules.xkd_tiny import SAMPLES, TINY_XKD`` and add what a test varies.
"""

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
