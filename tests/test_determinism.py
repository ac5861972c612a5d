"""Same seed, same CPU results: two XKD runs from seed 0 agree bit for bit; seed 1 differs."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from tests.test_resume import XKD_TINY, AugmentedClips
from xmkd.fault import ResumableDataLoader, ResumeState

pytestmark = pytest.mark.usefixtures("one_thread")


def train_once(seed: int, root: Path) -> dict[str, torch.Tensor]:
    from xmkd.modules.xkd import XKDPretrainer

    pl.seed_everything(seed)
    model = XKDPretrainer(**XKD_TINY)
    data = AugmentedClips()
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, default_root_dir=root, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[ResumeState()],
    )  # fmt: skip
    trainer.fit(
        model,
        ResumableDataLoader(data, batch_size=2, shuffle=True, num_workers=0),
        ResumableDataLoader(data, batch_size=4),
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.timeout(300)
def test_same_seed_same_weights_different_seed_differs(tmp_path: Path) -> None:
    first, second = train_once(0, tmp_path / "a"), train_once(0, tmp_path / "b")
    for key in first:
        torch.testing.assert_close(second[key], first[key], atol=0, rtol=0, msg=key)
    other = train_once(1, tmp_path / "c")
    assert any(not torch.equal(other[k], first[k]) for k in first if k.startswith("student."))


def test_epoch_order_and_item_seeds_are_pure_functions_of_seed_and_epoch() -> None:
    from xmkd.fault import EpochSeededRandomSampler, item_seed

    a, b = EpochSeededRandomSampler(range(20), seed=3), EpochSeededRandomSampler(range(20), seed=3)
    torch.manual_seed(0)
    order0 = list(a)
    torch.manual_seed(99)  # the global RNG plays no part
    assert list(b) == order0 and sorted(order0) == list(range(20))
    b.set_epoch(1)
    assert list(b) != order0 and sorted(b) == list(range(20))
    assert item_seed(3, 0, 5) == item_seed(3, 0, 5) != item_seed(3, 1, 5)
    # skipping resumes inside the same order without loading the skipped items
    loaded: list[int] = []

    class Recording(list):
        def __getitem__(self, i):
            loaded.append(i)
            return torch.tensor([i])

    data = Recording(range(10))
    loader = ResumableDataLoader(data, batch_size=3, shuffle=True, seed=3)
    full = [b.flatten().tolist() for b in loader]
    loaded.clear()
    loader.skip_batches(2)
    rest = [b.flatten().tolist() for b in loader]
    assert rest == full[2:] and sorted(loaded) == sorted(i for b in full[2:] for i in b)


def test_a_batch_of_items_is_each_item_under_its_own_seed_and_leaves_the_callers_rng() -> None:
    """The DataLoader fetches a batch through ``__getitems__`` (the caller's RNG saved once per
    batch): every item is what ``__getitem__`` gives alone, and the caller's three generators go on
    as if nothing had run."""
    import random

    import numpy as np

    from xmkd.fault import _SeededItems

    class Draws:
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> tuple[float, float, float]:
            return torch.rand(()).item(), float(np.random.rand()), random.random()

    items = _SeededItems(Draws(), seed=5, epoch=2)
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    expected_next = torch.rand(()).item(), float(np.random.rand()), random.random()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    batch = items.__getitems__([3, 0, 7])
    assert (torch.rand(()).item(), float(np.random.rand()), random.random()) == expected_next
    assert batch == [items[3], items[0], items[7]]
    assert len(set(batch)) == 3  # each item under its own seed
    # through the DataLoader (which takes the __getitems__ path): the same items as one by one
    loader = ResumableDataLoader(Draws(), batch_size=4, shuffle=True, seed=5)
    loaded = [row for b in loader for row in zip(*(t.tolist() for t in b))]
    epoch0 = _SeededItems(Draws(), seed=5, epoch=0)
    assert sorted(loaded) == sorted(epoch0[i] for i in range(8))
