"""TeacherOutputCache: outputs reused per video while its input is unchanged, recomputed otherwise."""

from __future__ import annotations

import torch

from xmkd.distill.teacher_cache import TeacherOutputCache, valid_lengths


def batch(features: torch.Tensor, lengths: list[int], ids: list[str]) -> dict:
    mask = torch.arange(features.shape[1])[None] < torch.tensor(lengths)[:, None]
    return {"features": {"rgb": features}, "mask": mask, "video_id": ids}


def test_valid_lengths() -> None:
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    assert valid_lengths(mask) == [2, 0, 3]


def test_hits_serve_the_stored_rows_and_changed_inputs_miss() -> None:
    calls = []

    def teacher(b: dict) -> dict:
        calls.append(1)
        return {"logits": b["features"]["rgb"] * 2, "other": b["features"]["rgb"]}

    cache = TeacherOutputCache(["logits"])
    x = torch.randn(2, 5, 3)
    first = cache.outputs(batch(x, [5, 3], ["a", "b"]), teacher, torch.device("cpu"))
    assert set(first) == {"logits"} and len(cache) == 2 and len(calls) == 1
    again = cache.outputs(batch(x.clone(), [5, 3], ["a", "b"]), teacher, torch.device("cpu"))
    assert len(calls) == 1  # served from the cache: valid steps equal, padding zero
    assert torch.equal(again["logits"][0], first["logits"][0])
    assert torch.equal(again["logits"][1, :3], first["logits"][1, :3]) and not again["logits"][1, 3:].any()
    changed = x.clone()
    changed[1, 0, 0] += 1.0
    cache.outputs(batch(changed, [5, 3], ["a", "b"]), teacher, torch.device("cpu"))
    assert len(calls) == 2  # one video's input changed: recomputed
