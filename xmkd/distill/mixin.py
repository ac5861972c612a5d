"""Named, weighted loss terms: one total for the optimiser, each term logged under its name.

Every module with several loss terms sums them here: XKD logs ``loss/<name>`` and ``loss/total``
(``prefix`` default), the detection student ``train/loss_<name>`` and ``train/loss`` like the other
detection modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor

LossTerm = Tensor | Callable[[], Tensor]


class WeightedLossSum:
    """total = sum_i w_i * L_i (divided by sum_i w_i when ``normalize``), zero-weight terms skipped.

    Terms may be given as zero-argument callables so that a zero-weight term is never computed.
    The log dict holds each computed term unweighted (``<prefix><name>``) and the total
    (``total_key``).
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        normalize: bool = False,
        prefix: str = "loss/",
        total_key: str = "loss/total",
    ) -> None:
        bad = {k: w for k, w in weights.items() if w < 0}
        if bad:
            raise ValueError(f"loss weights must be >= 0, got {bad}")
        self.weights = dict(weights)
        self.normalize = normalize
        total = sum(self.weights.values())
        if normalize and total <= 0:
            raise ValueError("normalize=True needs at least one positive weight")
        self.denominator = total if normalize else 1.0
        self.prefix = prefix
        self.total_key = total_key

    def active(self, name: str) -> bool:
        return self.weights.get(name, 0.0) != 0.0

    def __call__(self, terms: Mapping[str, LossTerm]) -> tuple[Tensor, dict[str, Tensor]]:
        unknown = set(terms) - set(self.weights)
        if unknown:
            raise KeyError(f"loss terms without a weight: {sorted(unknown)}")
        total: Tensor | None = None
        logs: dict[str, Tensor] = {}
        for name, term in terms.items():
            w = self.weights[name]
            if w == 0.0:
                continue
            value = term() if callable(term) else term
            logs[f"{self.prefix}{name}"] = value.detach()
            contribution = value * (w / self.denominator)
            total = contribution if total is None else total + contribution
        if total is None:
            raise ValueError("all loss terms have zero weight")
        logs[self.total_key] = total.detach()
        return total, logs


class WeightedLossMixin:
    """For LightningModules: set ``self.loss_sum = WeightedLossSum(...)`` and call ``combine_losses``."""

    loss_sum: WeightedLossSum

    def combine_losses(self, terms: Mapping[str, LossTerm]) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss_sum(terms)
