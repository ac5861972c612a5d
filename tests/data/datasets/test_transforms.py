"""Video/audio augmentations: shapes, one draw per clip, and the maths against direct computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from xmkd.data.datasets.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LINEAR_EVAL_CROP_SCALE,
    ClipColorJitter,
    VideoEvalTransform,
    VideoTrainTransform,
    XKDVideoViews,
    linear_eval_transform,
    luma,
    to_tchw,
    yiq_hue_matrix,
    yiq_hue_shift,
)
from xmkd.models.audio import crop_resize_time, spectrogram_local_views, volume_jitter


def static_clip(t: int = 16, h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    """The same random frame repeated: any per-frame difference in the output is inconsistency."""
    g = torch.Generator().manual_seed(seed)
    frame = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g)
    return frame.expand(t, h, w, 3).contiguous()


def assert_frames_equal(video: torch.Tensor, time_dim: int) -> None:
    first = video.select(time_dim, 0).unsqueeze(time_dim)
    torch.testing.assert_close(video, first.expand_as(video), atol=1e-5, rtol=0)


def test_xkd_views_shapes_and_one_draw_per_clip():
    torch.manual_seed(0)
    views = XKDVideoViews(
        num_frames=16, size=32, local_frames=4, local_size=24, num_local_views=3, blur_kernel=5
    )
    for _ in range(5):  # several draws: jitter, grayscale, blur, flip all exercised
        out = views(static_clip())
        assert out["video"].shape == (3, 16, 32, 32) and out["video"].dtype == torch.float32
        assert out["video_local"].shape == (3, 3, 4, 24, 24)
        assert_frames_equal(out["video"], 1)
        assert_frames_equal(out["video_local"], 2)
    # the views differ from each other (random crops), and the output is normalised
    assert not torch.allclose(out["video_local"][0], out["video_local"][1])


def test_xkd_probe_view_is_the_linear_evaluations_view_without_colour_operations():
    # A clip of one colour stays that colour under crops, flips and resizes, so any change in the
    # probe view would be a colour operation; the global view's jitter (always on) does change it.
    colour = torch.tensor([200, 40, 90], dtype=torch.uint8)
    clip = colour.expand(8, 24, 32, 3).contiguous()
    expected = ((colour.float() / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).view(
        3, 1, 1, 1
    )
    views = XKDVideoViews(num_frames=8, size=16, local_frames=4, local_size=8, probe_view=True)
    assert "video_probe" not in XKDVideoViews(num_frames=8, size=16, local_frames=4, local_size=8)(clip)
    torch.manual_seed(0)
    jittered = 0
    for _ in range(8):
        out = views(clip)
        assert out["video_probe"].shape == (3, 8, 16, 16)
        torch.testing.assert_close(out["video_probe"], expected.expand(3, 8, 16, 16), atol=1e-5, rtol=0)
        jittered += not torch.allclose(out["video"], expected.expand(3, 8, 16, 16), atol=1e-3)
    assert jittered > 0
    # the geometry is random: a textured clip's probe views differ between draws
    textured = static_clip(8, 24, 32)
    assert not torch.allclose(views(textured)["video_probe"], views(textured)["video_probe"])


def test_linear_eval_transform_crops_and_flips_only():
    transform = linear_eval_transform(16)
    assert transform.erase is None
    ops = [type(op).__name__ for op in transform.geometric.transforms]
    assert ops == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert tuple(transform.geometric.transforms[0].scale) == LINEAR_EVAL_CROP_SCALE


def test_xkd_views_accepts_float_cthw_and_checks_length():
    views = XKDVideoViews(num_frames=8, size=16, local_frames=4, local_size=8)
    clip = static_clip(8).permute(3, 0, 1, 2).float() / 255
    assert views(clip)["video"].shape == (3, 8, 16, 16)
    with pytest.raises(ValueError, match="8 frames"):
        views(static_clip(6))
    with pytest.raises(ValueError, match="uint8"):
        to_tchw(torch.zeros(4, 8, 8, 5))


def test_local_window_is_contiguous_frames():
    views = XKDVideoViews(num_frames=16, size=8, local_frames=4, local_size=8)
    for _ in range(10):
        idx = views._local_indices(16)
        assert idx.tolist() == list(range(int(idx[0]), int(idx[0]) + 4)) and 0 <= idx[0] <= 12


def test_yiq_hue_shift_keeps_luma_and_inverts():
    g = torch.Generator().manual_seed(1)
    x = 0.35 + 0.3 * torch.rand(2, 3, 8, 8, generator=g)  # mid colours: no clamping
    y = yiq_hue_shift(x, 0.1)
    luma = lambda z: (torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1) * z).sum(-3)  # noqa: E731
    torch.testing.assert_close(luma(y), luma(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(yiq_hue_shift(y, -0.1), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(yiq_hue_shift(x, 0.0), x, atol=1e-6, rtol=0)
    # close to torchvision's HSV hue shift for a small shift of unsaturated colours
    assert (yiq_hue_shift(x, 0.02) - TF.adjust_hue(x, 0.02)).abs().mean() < 0.02


def test_luma_is_torchvisions_grayscale_bit_for_bit():
    g = torch.Generator().manual_seed(2)
    for shape in [(3, 5, 7), (4, 3, 8, 8), (2, 4, 3, 6, 6), (4, 1, 8, 8)]:
        x = torch.rand(*shape, generator=g)
        assert torch.equal(luma(x), TF.rgb_to_grayscale(x))


def test_yiq_hue_map_and_shift_are_the_direct_float32_computation():
    """The ops written out once, as the recipe's figures were made: a matrix from float32 cos/sin and
    a fresh inverse, each output plane ``m0 r``, then ``+ m1 g``, ``+ m2 b`` (scalar ``alpha``), clamped."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 9, 9, generator=g) * 1.2
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    for hue in (-0.2, -0.013, 0.0, 0.07, 0.2):
        c, s = torch.cos(torch.tensor(2 * torch.pi * hue)), torch.sin(torch.tensor(2 * torch.pi * hue))
        m = (
            torch.linalg.inv(yiq)
            @ torch.stack(
                [torch.tensor([1.0, 0, 0]), torch.stack([0 * c, c, -s]), torch.stack([0 * s, s, c])]
            )
            @ yiq
        )
        assert torch.equal(yiq_hue_matrix(hue), m)
        r, gr, b = x.unbind(-3)
        want = torch.stack(
            [(r * m[i, 0]).add_(gr, alpha=float(m[i, 1])).add_(b, alpha=float(m[i, 2])) for i in range(3)], -3
        )
        assert torch.equal(yiq_hue_shift(x, hue), want.clamp(0, 1))


def test_clip_color_jitter_brightness_only_matches_scaling():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8) * 0.5
    y = ClipColorJitter(brightness=0.4, contrast=0, saturation=0, hue=0)(x)
    ratio = y / x
    assert ratio.min() >= 0.6 - 1e-6 and torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-5)


def test_train_transform_consistent_with_randaugment_and_erasing():
    torch.manual_seed(0)
    tr = VideoTrainTransform(size=32, erase_p=1.0)
    for _ in range(4):
        out = tr(static_clip(8))
        assert out.shape == (3, 8, 32, 32)
        assert_frames_equal(out, 1)


def test_eval_three_crops_left_centre_right():
    # a landscape clip whose pixel value encodes the column: crops can be located exactly
    t, h, w = 4, 32, 64
    cols = torch.arange(w, dtype=torch.uint8).view(1, 1, w, 1).expand(t, h, w, 3).contiguous()
    ev = VideoEvalTransform(size=32, short_side=32, num_crops=3, mean=(0, 0, 0), std=(1, 1, 1))
    views = ev.views(cols)
    assert [i for i, _ in views] == [0, 1, 2]
    left_cols = [round(float(v[0, 0, 0, 0]) * 255) for _, v in views]
    assert left_cols == [0, 16, 32]
    torch.testing.assert_close(ev(cols, crop_index=2), views[2][1])
    torch.testing.assert_close(ev(cols), views[1][1])
    portrait = cols.transpose(1, 2).contiguous()  # (T, 64, 32, 3): crops go top/centre/bottom
    tops = [round(float(v[0, 0, 0, 0]) * 255) for _, v in ev.views(portrait)]
    assert tops == [0, 16, 32]


def test_eval_resizes_short_side_and_normalises():
    ev = VideoEvalTransform(size=16, short_side=20)
    clip = static_clip(4, 40, 60)
    out = ev(clip)
    resized = TF.resize(clip.permute(0, 3, 1, 2), [20], antialias=True)  # (T, C, 20, 30)
    ref = resized[..., 2:18, 7:23].float() / 255
    ref = (ref - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, ref.permute(1, 0, 2, 3))


def test_volume_jitter_range_and_per_row_gain():
    g = torch.Generator().manual_seed(0)
    w = torch.ones(1000, 10)
    out = volume_jitter(w, 0.2, generator=g)
    gains = out[:, 0]
    assert torch.all(out == gains[:, None])  # one gain per waveform
    assert gains.min() >= 0.8 and gains.max() <= 1.2 and gains.std() > 0.1
    assert volume_jitter(torch.ones(5), 0.2).unique().numel() == 1


def test_crop_resize_time_matches_interpolate():
    g = torch.Generator().manual_seed(0)
    spec = torch.randn(2, 5, 60, generator=g)
    start = torch.tensor([[0, 10, 37], [5, 0, 20]])
    width = torch.tensor([[30, 7, 23], [55, 60, 1]])
    out = crop_resize_time(spec, start, width, 16)
    assert out.shape == (2, 3, 5, 16)
    for b in range(2):
        for v in range(3):
            s, w = int(start[b, v]), int(width[b, v])
            ref = F.interpolate(spec[b : b + 1, :, s : s + w], size=16, mode="linear", align_corners=False)[0]
            torch.testing.assert_close(out[b, v], ref, atol=1e-5, rtol=1e-5)


def test_spectrogram_local_views_are_stretched_segments():
    g = torch.Generator().manual_seed(0)
    t = 448
    ramp = torch.arange(t, dtype=torch.float32).expand(4, 80, t).contiguous()  # value = frame index
    views = spectrogram_local_views(ramp, num_views=3, crop_frames=112, scale=(0.6, 1.5), generator=g)
    assert views.shape == (4, 3, 80, 112)
    span = views[..., -1] - views[..., 0]  # ~ segment width - 1 after linear resize
    assert span.min() >= 0.6 * 112 - 3 and span.max() <= 1.5 * 112
    assert views.min() >= 0 and views.max() <= t - 1
    assert torch.all(views[..., 1:] >= views[..., :-1])  # order along time is kept


# ------------------------------------------------------------------ the release's audio views


def test_bicubic_crop_matrix_is_interpolate_of_the_crop() -> None:
    import torch.nn.functional as F

    from xmkd.models.audio import bicubic_crop_matrix

    torch.manual_seed(0)
    x = torch.randn(3, 40, dtype=torch.float64)
    for start, length, out in ((0, 40, 17), (5, 12, 30), (20, 1, 9), (7, 33, 33), (0, 2, 50)):
        m = bicubic_crop_matrix(torch.tensor([start]), torch.tensor([length]), 40, out)[0]
        crop = x[:, start : start + length]
        ref = F.interpolate(crop[:, None, None], size=(1, out), mode="bicubic", align_corners=True)[:, 0, 0]
        torch.testing.assert_close(x @ m.T, ref, rtol=0, atol=1e-12)


def test_spectrogram_resized_crop_is_the_release_view_by_view() -> None:
    """The release's RandomResizeCrop.forward for given boxes: zero canvas (1.0 x 1.5 of the input),
    input centred, box cut, F.interpolate(bicubic, align_corners=True) back to the input size."""
    import torch.nn.functional as F

    from xmkd.models.audio import sample_spectrogram_crops, spectrogram_resized_crop

    torch.manual_seed(1)
    spec = torch.randn(6, 80, 112)
    top, left, h, w = sample_spectrogram_crops(6, (80, 112))
    assert (h >= 48).all() and (h <= 80).all() and (w >= 67).all() and (w <= 168).all()
    assert (top + h <= 80).all() and (left + w <= 168).all()
    ours = spectrogram_resized_crop(spec, top, left, h, w)
    for k in range(6):
        canvas = torch.zeros(80, 168)
        canvas[:, 28 : 28 + 112] = spec[k]
        crop = canvas[top[k] : top[k] + h[k], left[k] : left[k] + w[k]]
        ref = F.interpolate(crop[None, None], size=(80, 112), mode="bicubic", align_corners=True)[0, 0]
        torch.testing.assert_close(ours[k], ref, rtol=1e-5, atol=1e-4)  # float32 products


def test_spectrogram_crop_boxes_cover_the_release_ranges() -> None:
    from xmkd.models.audio import sample_spectrogram_crops

    torch.manual_seed(2)
    top, left, h, w = sample_spectrogram_crops(4000, (80, 112))
    # int(U(0.6, 1.5) * 80) clipped to the 80-row canvas: 48..80, 80 whenever U >= 1 (5/9 of the draws)
    assert int(h.min()) == 48 and int(h.max()) == 80 and abs(float((h == 80).double().mean()) - 5 / 9) < 0.03
    assert int(w.min()) == 67 and int(w.max()) == 167 and 25 <= int(top.max()) <= 32
    assert int(left.min()) == 0 and int((left + w).max()) == 168


def test_random_waveform_crops_start_on_100_sample_steps() -> None:
    from xmkd.models.audio import random_waveform_crops

    torch.manual_seed(3)
    wave = torch.arange(64000, dtype=torch.float32).repeat(4, 1) + torch.arange(4)[:, None] * 1e5
    crops = random_waveform_crops(wave, 3, 16000)
    assert crops.shape == (4, 3, 16000)
    starts = crops[..., 0] - (torch.arange(4)[:, None] * 1e5)
    assert torch.all(starts % 100 == 0) and starts.min() >= 0 and starts.max() <= 48000
    torch.testing.assert_close(crops - crops[..., :1], torch.arange(16000.0).expand(4, 3, -1))
