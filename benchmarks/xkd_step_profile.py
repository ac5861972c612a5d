"""Where the time of the tiny XKD recipe's training step and of its augmentation goes (CPU).

Builds the model of ``experiments/xkd/xkd_tiny_synthetic.yaml`` exactly as ``make pretrain-xkd``
does (:class:`xmkd.modules.xkd_control.XKDWithRandomInitProbe`: the XKD pretrainer plus the
control probe on a frozen copy of the initial encoders) and a synthetic batch of the recipe's
shapes (batch 16: 16x64x64 global and probe views, one 8x48x48 local view, 2 s of 16 kHz audio),
then runs the step as Lightning does (``training_step``, backward, per-tensor clipping, fused
AdamW, ``zero_grad``, EMA teacher update) and reports:

- wall-clock medians of each phase (forward / backward / clip / optimiser / zero_grad / EMA) over
  ``--steps`` steps, and the wall-clock share of named parts of the forward (log-mel, audio local
  views, masked students + decoders + reconstruction loss, local views, heads, teachers, the probe
  passes of the student and of the frozen random-init encoders);
- a ``torch.profiler`` (CPU) table of the top operators by self time over ``--profile-steps``
  steps (the profiler's own overhead inflates small ops: read it for ranking, the wall clock for
  time);
- the augmentation of one batch (16 decoded uint8 clips of 16x64x64 -> global, local and probe
  views): the per-clip transform (``augment_on: sample``: ``XKDVideoViews`` per clip) and, where
  this xmkd has it, the batched one (``augment_on: batch``: parameters drawn per clip, collate, one
  ``XKDBatchViews.apply``), interleaved. The data loader's own cost (decode cache, item seeding,
  audio) is not in it.

Absolute times are noisy on a shared machine; read the fractions and the A/B ratios.

    python benchmarks/xkd_step_profile.py [--steps 10] [--profile-steps 3] [--warmup 2] [--threads N]
        [--aug-batches 10] [--config experiments/xkd/xkd_tiny_synthetic.yaml] [--rows 25] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import default_collate

from xmkd.distill.ema import collect_ema_tensors, ema_update_tensors_
from xmkd.optim import build_adamw

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "experiments" / "xkd" / "xkd_tiny_synthetic.yaml"


def load_recipe(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model init_args, data init_args) of an experiment YAML."""
    cfg = yaml.safe_load(path.read_text())
    return dict(cfg["model"]["init_args"]), dict(cfg["data"]["init_args"])


def build_model(model_args: dict[str, Any]) -> tuple[Any, torch.optim.Optimizer, tuple]:
    """The pipeline's model, its AdamW (as ``configure_optimizers``) and its EMA tensor lists."""
    from xmkd.modules.xkd_control import XKDWithRandomInitProbe

    torch.manual_seed(0)
    model = XKDWithRandomInitProbe(**model_args)
    model.train()
    model.log = lambda *a, **k: None  # no Trainer here; logging is not what is measured
    model.log_dict = lambda *a, **k: None
    hp = model.hparams
    optimizer = build_adamw(model.optimizer_param_groups(), hp.lr, tuple(hp.betas))
    return model, optimizer, collect_ema_tensors(model.ema_pairs())


def make_batch(model_args: dict[str, Any], data_args: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """A batch as the datamodule hands it to the model (views already augmented and normalised)."""
    g = torch.Generator().manual_seed(seed)
    b, t, s = data_args["batch_size"], data_args["num_frames"], data_args["crop_size"]
    lt, ls, nl = data_args["local_frames"], data_args["local_crop_size"], data_args["num_local_views"]
    samples = round(data_args["audio_seconds"] * 16000)
    batch = {
        "video": torch.randn(b, 3, t, s, s, generator=g),
        "video_local": torch.randn(b, nl, 3, lt, ls, ls, generator=g),
        "audio": 0.1 * torch.randn(b, samples, generator=g),
        "label": torch.randint(0, model_args.get("probe_num_classes") or 10, (b,), generator=g),
    }
    if data_args.get("linear_probe_view"):
        batch["video_probe"] = torch.randn(b, 3, t, s, s, generator=g)
    return batch


#: wall-clock seconds spent in each named region since the last reset (nested regions overlap)
REGION_SECONDS: dict[str, float] = {}


def instrument(model: Any) -> None:
    """Wrap the forward's pieces in ``record_function`` (profiler names) and a wall-clock timer."""

    def wrap(obj: Any, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            with record_function(name):
                out = fn(*args, **kwargs)
            REGION_SECONDS[name] = REGION_SECONDS.get(name, 0.0) + time.perf_counter() - t0
            return out

        setattr(obj, attr, wrapped)

    wrap(model, "audio_spectrogram", "fwd: log-mel")
    wrap(model, "audio_local_views", "fwd: audio local views")
    wrap(model, "_student_views", "fwd: student (masked global + local views) + decoder + rec loss")
    wrap(model, "_teacher_pooled", "fwd: teachers (+ refinement)")
    wrap(model, "_teacher_outputs", "fwd: teacher heads")
    for m in ("video", "audio"):
        wrap(model.heads[m], "forward", "fwd: student heads")
        wrap(model.student[m], "patch_mean", "fwd: probe pass, student (no grad)")
    if getattr(model, "random_init_encoders", None) is not None:
        wrap(model, "_random_init_features", "fwd: probe pass, random-init encoders (no grad)")
    wrap(model, "_probe_losses", "fwd: probe heads + CE")


def make_step(model: Any, optimizer: torch.optim.Optimizer, ema: tuple) -> Callable[[dict], dict[str, float]]:
    """One optimiser step as Lightning runs it; returns the wall time of each phase."""
    momentum = model.hparams.ema_base_momentum

    def step(batch: dict) -> dict[str, float]:
        times = {}
        t0 = time.perf_counter()
        with record_function("step: forward"):
            loss = model.training_step(batch, 1)
        t1 = time.perf_counter()
        with record_function("step: backward"):
            loss.backward()
        t2 = time.perf_counter()
        with record_function("step: clip"):
            model.configure_gradient_clipping(optimizer)
        t3 = time.perf_counter()
        with record_function("step: optimizer"):
            optimizer.step()
        t4 = time.perf_counter()
        with record_function("step: zero_grad"):
            optimizer.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        with record_function("step: EMA"):
            ema_update_tensors_(*ema, momentum)
        t6 = time.perf_counter()
        times.update(
            forward=t1 - t0, backward=t2 - t1, clip=t3 - t2, optimizer=t4 - t3, zero_grad=t5 - t4, ema=t6 - t5
        )
        times["total"] = t6 - t0
        return times

    return step


# ------------------------------------------------------------------------------------ augmentation


def augmenters(data_args: dict[str, Any]) -> dict[str, Callable[[torch.Tensor], Any]]:
    """name -> function of a uint8 batch of clips (B, T, H, W, C) returning the views."""
    from xmkd.data.datasets import transforms as T

    kw = dict(
        num_frames=data_args["num_frames"],
        size=data_args["crop_size"],
        local_frames=data_args["local_frames"],
        local_size=data_args["local_crop_size"],
        num_local_views=data_args["num_local_views"],
        probe_view=bool(data_args.get("linear_probe_view")),
    )
    per_clip = T.XKDVideoViews(**kw)

    def sample(clips: torch.Tensor) -> Any:
        return [per_clip(c) for c in clips]

    out: dict[str, Callable[[torch.Tensor], Any]] = {"sample (per clip)": sample}
    try:
        from xmkd.data.datasets.batch_transforms import AUGMENT_KEY, RAW_VIDEO_KEY, XKDBatchViews
    except ImportError:  # an xmkd from before augment_on: batch
        return out
    batched = XKDBatchViews(**kw)

    def batch(clips: torch.Tensor) -> Any:
        # what augment_on: batch does: per item, draw the parameters; collate; one batched apply
        collated = default_collate([batched.sample(c) for c in clips])
        return batched.apply(collated[RAW_VIDEO_KEY], collated[AUGMENT_KEY])

    out["batch (batched ops)"] = batch
    return out


def time_augmentation(data_args: dict[str, Any], batches: int) -> dict[str, dict[str, float]]:
    """Median / min seconds per batch of each augmentation path, A/B interleaved."""
    g = torch.Generator().manual_seed(0)
    b, t, s = data_args["batch_size"], data_args["num_frames"], data_args.get("synthetic_size", 64)
    clips = torch.randint(0, 256, (b, t, s, s, 3), dtype=torch.uint8, generator=g)
    funcs = augmenters(data_args)
    times: dict[str, list[float]] = {k: [] for k in funcs}
    for fn in funcs.values():  # warm-up
        fn(clips)
    for _ in range(batches):
        for name, fn in funcs.items():
            t0 = time.perf_counter()
            fn(clips)
            times[name].append(time.perf_counter() - t0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v)} for k, v in times.items()}


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment YAML (the tiny recipe)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (wall clock, no profiler)")
    parser.add_argument("--profile-steps", type=int, default=3, help="steps under torch.profiler")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--aug-batches", type=int, default=10, help="timed augmentation batches per path")
    parser.add_argument("--rows", type=int, default=25, help="operators listed")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model_args, data_args = load_recipe(Path(args.config))
    data_args["synthetic_size"] = (data_args.get("synthetic_options") or {}).get("size", 64)
    model, optimizer, ema = build_model(model_args)
    instrument(model)
    batch = make_batch(model_args, data_args)
    step = make_step(model, optimizer, ema)
    print(f"threads {torch.get_num_threads()}, batch {data_args['batch_size']}, config {args.config}")

    for _ in range(args.warmup):
        step(batch)
    REGION_SECONDS.clear()
    phases = [step(batch) for _ in range(args.steps)]
    med = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    total = med["total"]
    print(f"\nstep phases, wall clock, median of {args.steps} steps (no profiler):")
    for k, v in med.items():
        print(f"  {k:<10} {v:8.4f} s  {100 * v / total:5.1f} %")
    mean_total = sum(p["total"] for p in phases) / len(phases)
    regions = {k: v / args.steps for k, v in REGION_SECONDS.items()}
    print("\nparts of the forward, wall clock, mean per step (% of the mean step):")
    for k, v in sorted(regions.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<52} {v:8.4f} s  {100 * v / mean_total:5.1f} %")

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.profile_steps):
            step(batch)
    events = prof.key_averages()
    print(f"\ntop {args.rows} operators by self CPU time over {args.profile_steps} profiled steps:")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=48))

    aug = time_augmentation(data_args, args.aug_batches)
    print(f"augmentation of one batch ({data_args['batch_size']} clips), median / min of {args.aug_batches}:")
    for k, v in aug.items():
        print(f"  {k:<22} {v['median_s']:8.4f} s  (min {v['min_s']:.4f})")

    if args.json:
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.rows]
        payload = {
            "threads": torch.get_num_threads(),
            "phases_median_s": med,
            "regions_s_per_step": regions,
            "top_ops_self_s_per_step": {e.key: e.self_cpu_time_total / 1e6 / args.profile_steps for e in top},
            "augmentation_s_per_batch": aug,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
