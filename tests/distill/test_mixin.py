import pytest
import torch

from xmkd.distill.mixin import WeightedLossSum


def test_normalised_weighted_sum_and_logs() -> None:
    s = WeightedLossSum({"da": 1.0, "kd": 1.0, "rec": 5.0}, normalize=True)
    total, logs = s({"da": torch.tensor(2.0), "kd": torch.tensor(3.0), "rec": torch.tensor(0.7)})
    torch.testing.assert_close(total, torch.tensor((2.0 + 3.0 + 5 * 0.7) / 7))
    assert set(logs) == {"loss/da", "loss/kd", "loss/rec", "loss/total"}
    torch.testing.assert_close(logs["loss/rec"], torch.tensor(0.7))


def test_zero_weight_terms_are_not_computed() -> None:
    calls = []

    def expensive() -> torch.Tensor:
        calls.append(1)
        return torch.tensor(1.0)

    s = WeightedLossSum({"a": 0.0, "b": 2.0})
    total, logs = s({"a": expensive, "b": lambda: torch.tensor(4.0)})
    assert calls == [] and "loss/a" not in logs
    torch.testing.assert_close(total, torch.tensor(8.0))
    with pytest.raises(KeyError):
        s({"c": torch.tensor(1.0)})


def test_a_prefix_names_the_logs_of_another_module_family() -> None:
    s = WeightedLossSum({"det": 1.0, "gcr": 0.5}, prefix="train/loss_", total_key="train/loss")
    det, gcr = torch.tensor(2.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    total, logs = s({"det": det, "gcr": gcr})
    assert set(logs) == {"train/loss_det", "train/loss_gcr", "train/loss"}
    assert total.item() == (det + 0.5 * gcr).item()  # un-normalised: the student's det + sum w_i L_i
    total.backward()
    assert (det.grad.item(), gcr.grad.item()) == (1.0, 0.5)
