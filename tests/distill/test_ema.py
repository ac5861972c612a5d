import copy
from types import SimpleNamespace

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from xmkd.distill.ema import EMATeacherCallback, cosine_momentum, ema_update_, ema_update_tensors_, freeze_


def test_ema_update_formula() -> None:
    student = nn.Linear(3, 2)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in teacher.parameters()]
    ema_update_(teacher, student, 0.9)
    for t0, t, s in zip(before, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * s)


def test_shared_teacher_tensor_is_updated_once() -> None:
    shared_s = nn.Linear(2, 2)
    student = nn.ModuleDict({"a": nn.Sequential(shared_s), "b": nn.Sequential(shared_s)})
    teacher = copy.deepcopy(student)
    assert teacher["a"][0] is teacher["b"][0]
    with torch.no_grad():
        shared_s.weight.fill_(1.0)
        teacher["a"][0].weight.fill_(0.0)
    from xmkd.distill.ema import collect_ema_tensors, ema_update_tensors_

    t, s = collect_ema_tensors([(student["a"], teacher["a"]), (student["b"], teacher["b"])])
    ema_update_tensors_(t, s, 0.5)
    torch.testing.assert_close(teacher["a"][0].weight, torch.full((2, 2), 0.5))  # once, not 0.75


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0, 100, 0.997) == 0.997
    assert cosine_momentum(100, 100, 0.997) == 1.0
    assert abs(cosine_momentum(50, 100, 0.996) - 0.998) < 1e-12


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Linear(4, 1)
        self.teacher = freeze_(copy.deepcopy(self.student))
        self.snapshots: list[torch.Tensor] = []

    def ema_pairs(self):
        return [(self.student, self.teacher)]

    def training_step(self, batch, batch_idx):
        return self.student(batch[0]).pow(2).mean()

    def on_train_start(self) -> None:
        self.snapshots.append(self.teacher.weight.detach().clone())

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.snapshots.append(self.teacher.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def test_callback_updates_only_after_real_optimiser_steps() -> None:
    module = _Tiny()
    callback = EMATeacherCallback(base_momentum=0.5)
    trainer = pl.Trainer(
        max_epochs=1,
        accumulate_grad_batches=2,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    data = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=2)
    trainer.fit(module, data)
    assert trainer.global_step == 2 and callback.total_steps == 2
    # Callback hooks run before the module's: snapshot i + 1 is the teacher after batch i. Steps
    # (and so EMA updates) happen after batches 1 and 3 only.
    changes = [not torch.equal(a, b) for a, b in zip(module.snapshots, module.snapshots[1:])]
    assert changes == [False, True, False, True]
    assert all(not p.requires_grad for p in module.teacher.parameters())
    assert not module.teacher.training


def _shared_pairs() -> tuple[nn.ModuleDict, nn.ModuleDict, nn.Linear]:
    """XKD-MATS in miniature: per-modality tokenisers, one shared block, shared in the teacher too."""
    torch.manual_seed(0)
    shared_s = nn.Linear(2, 2)
    student = nn.ModuleDict({m: nn.Sequential(nn.Linear(2, 2), shared_s) for m in ("video", "audio")})
    teacher = copy.deepcopy(student)
    assert teacher["video"][1] is teacher["audio"][1]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    return student, teacher, shared_s


def test_shared_teacher_tensor_per_pair_is_the_release_double_update() -> None:
    """The release's update_teacher: the video EMA, then the audio EMA over the same shared blocks."""
    student, teacher, _ = _shared_pairs()
    expected = copy.deepcopy(teacher)
    m = 0.997
    with torch.no_grad():  # the formula applied once per modality, literally
        for mod in ("video", "audio"):
            for t, s in zip(expected[mod].parameters(), student[mod].parameters()):
                t.mul_(m).add_((1 - m) * s)
    callback = EMATeacherCallback(m, m)  # constant momentum; shared_updates="per_pair" is the default
    pairs = [(student[mod], teacher[mod]) for mod in ("video", "audio")]
    groups = callback.tensor_groups(pairs)
    assert sorted(groups) == [1, 2] and len(groups[2][0]) == 2  # the shared weight and bias
    # the callback's own step: one optimiser step done (global_step 0 -> 1)
    module = SimpleNamespace(ema_pairs=lambda: pairs, log=lambda *args, **kwargs: None)
    callback.on_train_batch_end(SimpleNamespace(global_step=1), module, None, None, 0)
    for (name, t), e in zip(teacher.named_parameters(), expected.parameters()):
        torch.testing.assert_close(t, e, rtol=0, atol=1e-7, msg=name)


def test_shared_updates_once_keeps_one_update() -> None:
    student, teacher, shared_s = _shared_pairs()
    before = teacher["video"][1].weight.clone()
    groups = EMATeacherCallback(0.5, 1.0, shared_updates="once").tensor_groups(
        [(student[m], teacher[m]) for m in ("video", "audio")]
    )
    assert list(groups) == [1]
    ema_update_tensors_(*groups[1], 0.5)
    torch.testing.assert_close(teacher["video"][1].weight, 0.5 * before + 0.5 * shared_s.weight)


def test_per_pair_refuses_a_shared_teacher_of_different_students() -> None:
    import pytest

    teacher_block = nn.Linear(2, 2)
    pairs = [(nn.Sequential(nn.Linear(2, 2)), nn.Sequential(teacher_block)) for _ in range(2)]
    with pytest.raises(ValueError, match="different student"):
        EMATeacherCallback().tensor_groups(pairs)
