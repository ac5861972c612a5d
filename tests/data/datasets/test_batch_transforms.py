"""The batched XKD views (``augment_on: batch``): same views, same distribution, exact resume.

Against an independent per-clip reference built from torchvision's functional ops with the very
parameters the batch path drew (crop, flip, ClipColorJitter's ops, grayscale, 9-tap blur,
normalisation, in XKDVideoViews' order), plus statistical checks of the parameter distributions
with fixed generators, and the (seed, epoch, item) guarantee through ResumableDataLoader.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from xmkd.data.datasets.batch_transforms import (
    AUGMENT_KEY,
    RAW_VIDEO_KEY,
    XKDBatchViews,
    apply_color_jitter,
    blur_matrix,
    crop_resize,
    gaussian_blur,
    pad_clips,
    resample_matrix,
    sample_color_jitter,
    sample_resized_crop_boxes,
)
from xmkd.data.datasets.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LINEAR_EVAL_CROP_SCALE,
    ClipColorJitter,
    XKDVideoViews,
    _finish,
)
from xmkd.errors import ConfigError
from xmkd.fault import ResumableDataLoader

pytestmark = pytest.mark.usefixtures("one_thread")

KW = dict(num_frames=8, size=24, local_frames=4, local_size=16, probe_view=True)


def clips(n: int = 6, t: int = 8, h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, t, h, w, 3), dtype=torch.uint8, generator=g)


def reference_view(clip, box, flip, size, jitter=None, gray=False, sigma=0.0) -> torch.Tensor:
    """One view of one uint8 clip (T, H, W, C), per clip with torchvision ops: XKDVideoViews' pipeline."""
    x = TF.resized_crop(clip.permute(0, 3, 1, 2), *box, [size, size], antialias=True)
    if flip:
        x = TF.horizontal_flip(x)
    x = TF.to_dtype(x, torch.float32, scale=True)
    if jitter is not None and jitter[0]:
        for op in jitter[1]:
            x = ClipColorJitter.apply_op(x, op, jitter[2][op])
    if gray:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if sigma > 0:
        x = TF.gaussian_blur(x, [9, 9], [sigma, sigma])
    return _finish(x, IMAGENET_MEAN, IMAGENET_STD)


def reference_views(
    raw: torch.Tensor, p: dict[str, torch.Tensor], views: XKDBatchViews
) -> dict[str, torch.Tensor]:
    out: dict[str, list[torch.Tensor]] = {"video": [], "video_local": [], "video_probe": []}
    for i, clip in enumerate(raw):
        jitter = (bool(p["global_jitter"][i]), p["global_order"][i].tolist(), p["global_factors"][i].tolist())
        out["video"].append(
            reference_view(clip, p["global_box"][i].tolist(), bool(p["global_flip"][i]), views.size, jitter)
        )
        local = []
        for v in range(views.num_local_views):
            s = int(p["local_start"][i, v])
            jitter = (
                bool(p["local_jitter"][i, v]),
                p["local_order"][i, v].tolist(),
                p["local_factors"][i, v].tolist(),
            )
            local.append(
                reference_view(
                    clip[s : s + views.local_frames], p["local_box"][i, v].tolist(), bool(p["local_flip"][i, v]),
                    views.local_size, jitter, bool(p["local_gray"][i, v]), float(p["local_blur_sigma"][i, v]),
                )
            )  # fmt: skip
        out["video_local"].append(torch.stack(local))
        out["video_probe"].append(
            reference_view(clip, p["probe_box"][i].tolist(), bool(p["probe_flip"][i]), views.size)
        )
    return {k: torch.stack(v) for k, v in out.items()}


# ------------------------------------------------------------------------------ the views


@pytest.mark.parametrize("num_local_views", [1, 2])
def test_cpu_path_equals_the_per_clip_ops_with_the_same_parameters(num_local_views: int) -> None:
    views = XKDBatchViews(**KW, num_local_views=num_local_views)
    raw = clips()
    params = views.draw(len(raw), 8, 32, 40, torch.Generator().manual_seed(3))
    out = views.apply(raw, params)
    ref = reference_views(raw, params, views)
    for key, expected in ref.items():
        assert (
            out[key].shape == expected.shape and out[key].dtype == torch.float32 and out[key].is_contiguous()
        )
        torch.testing.assert_close(out[key], expected, atol=1e-5, rtol=0, msg=key)  # separable blur only


def test_shapes_dtypes_and_normalisation_are_the_per_clip_transforms() -> None:
    raw = clips()
    torch.manual_seed(0)
    per_clip = default_collate([XKDVideoViews(**KW, num_local_views=2)(c) for c in raw])
    batch = default_collate([XKDBatchViews(**KW, num_local_views=2)(c) for c in raw])
    assert set(batch) == {RAW_VIDEO_KEY, AUGMENT_KEY} and batch[RAW_VIDEO_KEY].dtype == torch.uint8
    out = XKDBatchViews(**KW, num_local_views=2).apply(batch[RAW_VIDEO_KEY], batch[AUGMENT_KEY])
    assert out.keys() == per_clip.keys()
    for key in out:
        assert (out[key].shape, out[key].dtype) == (per_clip[key].shape, per_clip[key].dtype), key
    # a flat clip of one colour: the probe view (no colour op) is that colour, normalised
    colour = torch.tensor([200, 40, 90], dtype=torch.uint8)
    flat = colour.expand(2, 8, 32, 40, 3).contiguous()
    views = XKDBatchViews(**KW)
    probe = views.apply(flat, views.draw(2, 8, 32, 40))["video_probe"]
    expected = (colour.float() / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(probe, expected.view(1, 3, 1, 1, 1).expand_as(probe), atol=1e-6, rtol=0)


def test_gpu_formulation_matches_the_cpu_path_up_to_uint8_rounding() -> None:
    """resize=matmul, jitter=batched (what runs off the CPU), here on the CPU: equal up to the
    per-clip path's uint8 rounding of the resized crop (half a grey level), which the jitter's
    factors (up to 1.4 per op) can amplify."""
    raw = clips()
    fast = XKDBatchViews(**KW, resize="matmul", jitter="batched")
    params = fast.draw(len(raw), 8, 32, 40, torch.Generator().manual_seed(4))
    out, ref = fast.apply(raw, params), XKDBatchViews(**KW).apply(raw, params)
    grey_level = 1 / 255 / min(IMAGENET_STD)
    for key in out:
        assert float((out[key] - ref[key]).abs().max()) < 4 * grey_level, key
        assert float((out[key] - ref[key]).abs().mean()) < 0.5 * grey_level, key


@pytest.mark.parametrize("method", ["loop", "matmul"])
def test_a_crop_of_a_known_image_lands_where_expected_and_flips(method: str) -> None:
    h, w = 20, 30
    y, x, c = torch.meshgrid(torch.arange(h), torch.arange(w), torch.arange(3), indexing="ij")
    image = ((7 * y + 3 * x + c) % 256).to(torch.uint8)  # every pixel identifiable
    video = image.permute(2, 0, 1).expand(2, 4, 3, h, w)  # (N, T, C, H, W)
    crop = image[3:15, 5:17].permute(2, 0, 1).float() / 255  # rows 3-14, columns 5-16
    same_size = crop_resize(
        video, torch.tensor([[3, 5, 12, 12]] * 2), 12, torch.tensor([False, True]), method
    )
    assert same_size.shape == (2, 4, 3, 12, 12)
    torch.testing.assert_close(same_size[0, 2], crop, atol=1e-6, rtol=0)
    torch.testing.assert_close(same_size[1, 0], crop.flip(-1), atol=1e-6, rtol=0)
    # an upscaled crop (2x) is torchvision's resize of the same pixels (within its uint8 rounding)
    up = crop_resize(video, torch.tensor([[2, 4, 8, 8]] * 2), 16, None, method)
    expected = TF.resize(image[2:10, 4:12].permute(2, 0, 1), [16, 16], antialias=True).float() / 255
    torch.testing.assert_close(up[0, 1], expected, atol=0.5 / 255 + 1e-6, rtol=0)


@pytest.mark.parametrize(("in_size", "out_size"), [(40, 64), (64, 24), (33, 33), (100, 17)])
def test_resample_matrix_is_atens_antialiased_bilinear(in_size: int, out_size: int) -> None:
    g = torch.Generator().manual_seed(in_size)
    length = torch.randint(in_size // 3, in_size + 1, (5,), generator=g)
    start = (torch.rand(5, generator=g) * (in_size - length + 1)).long()
    rows = torch.rand(5, 3, in_size, generator=g)
    m = resample_matrix(start, length, in_size, out_size)
    for i in range(5):
        segment = rows[i, :, start[i] : start[i] + length[i]]
        expected = F.interpolate(segment[None, :, None], size=(1, out_size), mode="bilinear", antialias=True)[
            0, :, 0
        ]
        torch.testing.assert_close(rows[i] @ m[i].T, expected, atol=1e-5, rtol=0)
        outside = torch.ones(in_size, dtype=torch.bool)
        outside[start[i] : start[i] + length[i]] = False
        assert m[i][:, outside].abs().max() == 0  # nothing outside the crop is read


def test_blur_is_torchvisions_gaussian_blur() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 3, 20, 17, generator=g)
    sigma = torch.tensor([0.1, 0.9, 2.0])
    out = gaussian_blur(x, sigma)
    for i, s in enumerate(sigma.tolist()):
        torch.testing.assert_close(out[i], TF.gaussian_blur(x[i], [9, 9], [s, s]), atol=1e-6, rtol=0)
    assert torch.allclose(blur_matrix(sigma, 20).sum(-1), torch.ones(3, 20))


def test_batched_colour_jitter_is_the_per_clip_jitter() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 2, 3, 8, 9, generator=g)
    on, order, factors = sample_color_jitter(12, (0.4, 0.4, 0.4, 0.2), 0.7, g)
    loop = apply_color_jitter(x.clone(), on, order, factors, method="loop")
    batched = apply_color_jitter(x.clone(), on, order, factors, method="batched")
    torch.testing.assert_close(batched, loop, atol=2e-6, rtol=0)
    for i in range(12):
        expected = x[i].clone()
        if on[i]:
            for op in order[i].tolist():
                expected = ClipColorJitter.apply_op(expected, op, float(factors[i, op]))
        torch.testing.assert_close(loop[i], expected, atol=0, rtol=0)
    torch.testing.assert_close(loop[~on], x[~on], atol=0, rtol=0)  # jitter off: untouched


def test_padded_clips_of_several_sizes_give_each_clips_own_views() -> None:
    small, large = clips(1, h=24, w=28, seed=1)[0], clips(1, h=32, w=40, seed=2)[0]
    padded = pad_clips([small, large])
    assert padded.shape == (2, 8, 32, 40, 3) and torch.equal(padded[0, :, :24, :28], small)
    assert padded[0, :, 24:].abs().sum() == 0
    views = XKDBatchViews(**KW)
    p_small, p_large = views.draw(1, 8, 24, 28), views.draw(1, 8, 32, 40)
    both = views.apply(padded, {k: torch.cat([p_small[k], p_large[k]]) for k in p_small})
    alone = views.apply(small[None], p_small)
    for key in both:
        torch.testing.assert_close(both[key][:1], alone[key], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ the parameters


def test_colour_jitter_is_always_on_by_default_as_released() -> None:
    p = XKDBatchViews(**KW, num_local_views=2).draw(200, 8, 32, 40, torch.Generator().manual_seed(0))
    assert bool(p["global_jitter"].all()) and bool(p["local_jitter"].all())


def test_parameters_have_the_per_clip_distributions_and_are_independent() -> None:
    views = XKDBatchViews(**KW, num_local_views=2, color_jitter_p=0.8)
    n = 4000
    p = views.draw(n, 8, 32, 40, torch.Generator().manual_seed(0))

    def near(rate: torch.Tensor, expected: float) -> bool:  # 5 binomial standard deviations
        return abs(float(rate.float().mean()) - expected) < 5 * math.sqrt(
            expected * (1 - expected) / rate.numel()
        )

    assert near(p["global_flip"], 0.5) and near(p["local_flip"], 0.5) and near(p["probe_flip"], 0.5)
    assert near(p["global_jitter"], 0.8) and near(p["local_jitter"], 0.8)
    assert near(p["local_gray"], 0.2) and near(p["local_blur_sigma"] > 0, 0.5)
    sigma = p["local_blur_sigma"][p["local_blur_sigma"] > 0]
    assert float(sigma.min()) >= 0.1 and float(sigma.max()) <= 2.0
    for key in ("global_factors", "local_factors"):
        f = p[key].reshape(-1, 4)
        assert float(f[:, :3].min()) >= 0.6 and float(f[:, :3].max()) <= 1.4
        assert float(f[:, 3].min()) >= -0.2 and float(f[:, 3].max()) <= 0.2
        assert abs(float(f[:, 0].mean()) - 1.0) < 0.01 and abs(float(f[:, 3].mean())) < 0.005
    for key in ("global_order", "local_order"):
        order = p[key].reshape(-1, 4)
        assert torch.equal(order.sort(1).values, torch.arange(4).expand_as(order))  # permutations
        first = torch.bincount(order[:, 0], minlength=4).float() / len(order)
        assert float((first - 0.25).abs().max()) < 0.03  # each op first equally often
    assert set(p["local_start"].unique().tolist()) == set(range(8 - 4 + 1))
    # independence: across samples, across views of one sample, across kinds of parameter
    numbers = torch.stack(
        [
            p["global_box"][:, 2].double(), p["local_box"][:, 0, 2].double(), p["local_box"][:, 1, 2].double(),
            p["probe_box"][:, 3].double(), p["global_flip"].double(), p["local_flip"][:, 0].double(),
            p["local_flip"][:, 1].double(), p["global_factors"][:, 0].double(), p["local_start"][:, 0].double(),
            p["local_blur_sigma"][:, 1].double(),
        ]
    )  # fmt: skip
    corr = torch.corrcoef(numbers)
    assert float((corr - torch.eye(len(numbers))).abs().max()) < 0.08
    assert abs(float(torch.corrcoef(torch.stack([numbers[0, :-1], numbers[0, 1:]]))[0, 1])) < 0.08


@pytest.mark.parametrize(
    ("scale", "size"), [((0.2, 1.0), (32, 40)), ((0.08, 0.4), (64, 64)), (LINEAR_EVAL_CROP_SCALE, (24, 80))]
)
def test_crop_boxes_follow_torchvisions_random_resized_crop(scale, size) -> None:
    h, w = size
    n = 3000
    ours = sample_resized_crop_boxes(n, h, w, scale, generator=torch.Generator().manual_seed(0)).double()
    rrc = v2.RandomResizedCrop(8, scale=scale)
    torch.manual_seed(0)
    theirs = torch.tensor(
        [list(rrc.make_params([torch.empty(3, h, w)]).values()) for _ in range(n)], dtype=torch.float64
    )
    for boxes in (ours, theirs):
        assert bool((boxes[:, 0] + boxes[:, 2] <= h).all() and (boxes[:, 1] + boxes[:, 3] <= w).all())
        assert bool((boxes >= 0).all())
    # the same distribution: means and spreads of height, width, area, aspect and position agree
    for stat in (
        lambda b: b[:, 2], lambda b: b[:, 3], lambda b: b[:, 2] * b[:, 3], lambda b: b[:, 3] / b[:, 2],
        lambda b: b[:, 0] + b[:, 2] / 2, lambda b: b[:, 1] + b[:, 3] / 2,
    ):  # fmt: skip
        a, b = stat(ours), stat(theirs)
        se = math.sqrt((a.var() + b.var()) / n)
        assert abs(float(a.mean() - b.mean())) < 5 * se + 1e-9
        assert abs(float(a.std() / b.std().clamp_min(1e-9)) - 1) < 0.1


def test_grayscale_and_blur_are_applied_at_their_probabilities() -> None:
    views = XKDBatchViews(**KW, color_jitter_p=0.0)
    raw = clips(200, t=8, h=32, w=40, seed=5)
    p = views.draw(200, 8, 32, 40, torch.Generator().manual_seed(1))
    local = views.apply(raw, p)["video_local"][:, 0]  # (N, C, t, h, w)
    rgb = local * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1) + torch.tensor(IMAGENET_MEAN).view(
        1, 3, 1, 1, 1
    )
    is_grey = (rgb - rgb.mean(1, keepdim=True)).abs().amax(dim=(1, 2, 3, 4)) < 1e-5
    assert torch.equal(is_grey, p["local_gray"][:, 0])
    assert 0.12 < float(is_grey.float().mean()) < 0.28
    unblurred = views.apply(raw, {**p, "local_blur_sigma": torch.zeros_like(p["local_blur_sigma"])})[
        "video_local"
    ]
    changed = (unblurred[:, 0] - local).abs().amax(dim=(1, 2, 3, 4)) > 1e-6
    blurred = p["local_blur_sigma"][:, 0] > 0
    assert bool((changed <= blurred).all())  # only blurred clips change (a blur with tiny sigma may not)
    assert 0.35 < float(blurred.float().mean()) < 0.65 and float(changed.float().mean()) > 0.3


def test_same_seed_same_views_other_seed_other_views() -> None:
    views = XKDBatchViews(**KW)
    raw = clips()
    a = views.apply(raw, views.draw(6, 8, 32, 40, torch.Generator().manual_seed(9)))
    b = views.apply(raw, views.draw(6, 8, 32, 40, torch.Generator().manual_seed(9)))
    c = views.apply(raw, views.draw(6, 8, 32, 40, torch.Generator().manual_seed(10)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["video"], c["video"])
    torch.manual_seed(9)
    from_global_rng = views.draw(6, 8, 32, 40)
    torch.manual_seed(9)
    assert all(torch.equal(from_global_rng[k], v) for k, v in views.draw(6, 8, 32, 40).items())


def test_invalid_options_and_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="hue_mode"):
        XKDBatchViews(hue_mode="hsv")
    with pytest.raises(ValueError, match="resize"):
        XKDBatchViews(resize="nearest")
    with pytest.raises(ValueError, match="uint8"):
        XKDBatchViews(**KW).sample(torch.rand(8, 32, 40, 3))
    with pytest.raises(ValueError, match="8 frames"):
        XKDBatchViews(**KW).sample(clips(1, t=6)[0])


# ------------------------------------------------------------------------------ exact resume


class RawClips(Dataset):
    """What TrimmedVideoDataset returns with ``augment_on: batch``: the clip and its drawn parameters."""

    def __init__(self, n: int = 12) -> None:
        self.raw = clips(n, seed=7)
        self.views = XKDBatchViews(**KW)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int) -> dict:
        return {**self.views.sample(self.raw[i]), "label": i}


def epoch_batches(loader: ResumableDataLoader, epoch: int, skip: int = 0) -> list[dict]:
    loader.sampler.set_epoch(epoch)
    loader.skip_batches(skip)
    views = loader.dataset.views
    return [{**views.apply(b[RAW_VIDEO_KEY], b[AUGMENT_KEY]), "label": b["label"]} for b in loader]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_views_are_a_function_of_seed_epoch_and_item_so_resume_is_exact(num_workers: int) -> None:
    """ResumableDataLoader seeds each item by (seed, epoch, index): the batched views of a resumed
    epoch (batches skipped), of another worker count and under another global RNG state are the
    uninterrupted run's."""
    data = RawClips()
    full = epoch_batches(ResumableDataLoader(data, batch_size=4, shuffle=True, seed=3), epoch=1)
    torch.manual_seed(12345)  # the training process's RNG must not matter
    loader = ResumableDataLoader(data, batch_size=4, shuffle=True, seed=3, num_workers=num_workers)
    resumed = epoch_batches(loader, epoch=1, skip=1)
    assert len(resumed) == len(full) - 1
    for a, b in zip(full[1:], resumed):
        assert all(torch.equal(a[k], b[k]) for k in a)
    other_epoch = epoch_batches(ResumableDataLoader(data, batch_size=4, shuffle=True, seed=3), epoch=2)
    assert not torch.equal(other_epoch[0]["video"], full[0]["video"])


# ------------------------------------------------------------------------------ the datamodule


def test_datamodule_augments_on_the_batch(tmp_path: Path) -> None:
    from xmkd.data.datasets.trimmed import TrimmedVideoDataModule

    options = dict(classes=3, clips_per_class=4, duration=1.0, size=32, fps=8, workers=1)
    common = dict(
        root=str(tmp_path / "synth-av"), synthetic_options=options, num_frames=4, fps=8, crop_size=16,
        local_crop_size=8, local_frames=2, test_clips=1, test_crops=1, batch_size=2, num_workers=0,
        linear_probe_view=True,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"config key 'augment_on'"):
        TrimmedVideoDataModule(
            **{**common, "linear_probe_view": False}, train_transform="eval", augment_on="batch"
        )
    with pytest.raises(ConfigError, match=r"config key 'augment_on'"):
        TrimmedVideoDataModule(**common, augment_on="gpu")
    sample_dm = TrimmedVideoDataModule(**common)
    batch_dm = TrimmedVideoDataModule(**common, augment_on="batch")
    for dm in (sample_dm, batch_dm):
        dm.prepare_data()
        dm.setup("fit")
    per_sample = next(iter(sample_dm.train_dataloader()))
    raw = next(iter(batch_dm.train_dataloader()))
    assert raw[RAW_VIDEO_KEY].dtype == torch.uint8 and "video" not in raw
    batched = batch_dm.on_after_batch_transfer(raw, 0)
    assert RAW_VIDEO_KEY not in batched and AUGMENT_KEY not in batched
    for key in ("video", "video_local", "video_probe", "audio", "label"):
        assert (batched[key].shape, batched[key].dtype) == (per_sample[key].shape, per_sample[key].dtype), key
    assert torch.equal(batched["label"], per_sample["label"]) and torch.equal(
        batched["audio"], per_sample["audio"]
    )
    evaluation = next(iter(batch_dm.val_dataloader()))
    assert batch_dm.on_after_batch_transfer(evaluation, 0) is evaluation  # evaluation batches untouched


def test_the_probe_view_is_left_out_of_training_batches_only_where_nobody_reads_it(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from xmkd.data.datasets.trimmed import TrimmedVideoDataModule

    options = dict(classes=3, clips_per_class=4, duration=1.0, size=32, fps=8, workers=1)
    dm = TrimmedVideoDataModule(
        root=str(tmp_path / "synth-av"), synthetic_options=options, num_frames=4, fps=8, crop_size=16,
        local_crop_size=8, local_frames=2, test_clips=1, test_crops=1, batch_size=2, num_workers=0,
        linear_probe_view=True, augment_on="batch",
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))

    def views(trainer: object) -> dict:
        dm.trainer = trainer
        batch = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
        return dm.on_after_batch_transfer(batch, 0)

    unread = SimpleNamespace(training=True, lightning_module=SimpleNamespace(reads_probe_view=False))
    read = SimpleNamespace(training=True, lightning_module=SimpleNamespace(reads_probe_view=True))
    after_fit = SimpleNamespace(training=False, lightning_module=unread.lightning_module)
    full, lean = views(read), views(unread)
    assert "video_probe" in full and "video_probe" not in lean
    assert "video_probe" in views(after_fit) and "video_probe" in views(None)  # e.g. features after training
    for key in ("video", "video_local"):
        assert torch.equal(full[key], lean[key]), key  # the other views are unchanged


def test_xkd_reads_the_probe_view_only_with_the_online_probe_on_the_linear_view() -> None:
    from xmkd.modules.xkd import XKDPretrainer

    tiny = dict(encoder_size="tiny", encoder_depth=1, num_frames=4, img_size=16, tubelet=2, patch_size=8,
                mel_bins=16, audio_frames=16, audio_patch=[8, 8], audio_local_frames=8, decoder_dim=16,
                decoder_depth=1, decoder_heads=2, head_hidden_dim=16, head_bottleneck_dim=8, head_out_dim=16)  # fmt: skip
    assert not XKDPretrainer(**tiny, probe_num_classes=0, probe_view="linear").reads_probe_view
    assert XKDPretrainer(**tiny, probe_num_classes=3, probe_view="linear").reads_probe_view
    assert not XKDPretrainer(**tiny, probe_num_classes=3, probe_view="global").reads_probe_view
