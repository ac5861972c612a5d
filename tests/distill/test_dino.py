import math

import torch

from xmkd.distill import dino
from xmkd.distill.dino import DINOCenter, dino_cross_entropy, multi_view_dino_cross_entropy


def _softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x - max(xs)) for x in xs]
    return [v / sum(e) for v in e]


def test_cross_entropy_by_hand() -> None:
    s = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
    t = [[0.2, 0.1, 0.0], [0.0, 0.3, 0.1]]
    c = [0.05, 0.0, -0.05]
    tau_s, tau_t = 0.1, 0.07
    expected = 0.0
    for si, ti in zip(s, t):
        q = _softmax([(a - b) / tau_t for a, b in zip(ti, c)])
        logp = [math.log(p) for p in _softmax([a / tau_s for a in si])]
        expected += -sum(qi * li for qi, li in zip(q, logp))
    expected /= 2
    got = dino_cross_entropy(torch.tensor(s), torch.tensor(t), torch.tensor([c]), tau_s, tau_t)
    assert abs(got.item() - expected) < 1e-5


def test_teacher_gets_no_gradient_and_views_average() -> None:
    s1 = torch.randn(4, 6, requires_grad=True)
    s2 = torch.randn(4, 6, requires_grad=True)
    t = torch.randn(4, 6, requires_grad=True)
    c = torch.zeros(1, 6)
    loss = multi_view_dino_cross_entropy([s1, s2], t, c, 0.1, 0.1)
    expected = (dino_cross_entropy(s1, t, c, 0.1, 0.1) + dino_cross_entropy(s2, t, c, 0.1, 0.1)) / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert t.grad is None and s1.grad is not None


def test_center_ema_single_process() -> None:
    center = DINOCenter(3, momentum=0.9)
    center.center.fill_(1.0)
    out = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    center.update(out)
    torch.testing.assert_close(center.center, 0.9 * torch.ones(1, 3) + 0.1 * torch.tensor([[2.0, 2.0, 2.0]]))


def test_center_all_reduces_the_batch_mean(monkeypatch) -> None:
    """Two ranks: this one has 2 rows, the other 1 row of all 10s; the mean is over 3 rows."""
    other = torch.tensor([10.0, 10.0, 10.0, 1.0])  # the other rank's (sum, count)

    def fake_all_reduce(t: torch.Tensor) -> None:
        t.add_(other)

    monkeypatch.setattr(dino.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dino.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dino.dist, "all_reduce", fake_all_reduce)
    center = DINOCenter(3, momentum=0.5)
    center.update(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    torch.testing.assert_close(center.center, 0.5 * torch.tensor([[14.0, 14.0, 14.0]]) / 3)


def test_teacher_temperature_warmup_by_hand() -> None:
    """The release's MAS schedule: np.linspace(0.09, 0.11, 30) over epochs 0-29, then 0.11."""
    from xmkd.distill.dino import teacher_temperature_at

    step = (0.11 - 0.09) / 29
    for epoch, expected in (
        (0, 0.09),
        (1, 0.09 + step),
        (15, 0.09 + 15 * step),
        (29, 0.11),
        (30, 0.11),
        (799, 0.11),
    ):
        assert abs(teacher_temperature_at(epoch, 0.11, 0.09, 30) - expected) < 1e-12, epoch
    assert abs(teacher_temperature_at(10, 0.06, 0.04, 30) - (0.04 + 0.02 * 10 / 29)) < 1e-12
    assert teacher_temperature_at(0, 0.07) == 0.07 and teacher_temperature_at(0, 0.07, 0.04, 0) == 0.07
    assert (
        teacher_temperature_at(0, 0.07, 0.04, 1) == 0.04 and teacher_temperature_at(1, 0.07, 0.04, 1) == 0.07
    )
