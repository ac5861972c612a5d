"""Model sizes that must agree with the data, checked in ``setup`` before the first step.

A dataset of 5 classes under ``num_classes: 4`` otherwise fails mid-step with "index 4 is out of
bounds" from the loss, and a feature width that differs from ``input_dim`` with a matmul shape
error. The data side is read by duck typing (``num_classes``, ``feature_dims``, ``num_frames``,
``crop_size`` of whatever datamodule the trainer holds): modules never import the data layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from xmkd.errors import ConfigError

__all__ = ["check_against_data", "data_attribute"]


def data_attribute(datamodule: Any, name: str) -> Any | None:
    """``datamodule.<name>``, or ``None`` where there is no datamodule, no such attribute, or the
    value is not known yet (the data modules raise RuntimeError before ``setup``)."""
    if datamodule is None:
        return None
    try:
        return getattr(datamodule, name, None)
    except (RuntimeError, OSError, KeyError, IndexError, ValueError):
        return None


def check_against_data(model: Any, datamodule: Any, checks: Iterable[tuple[str, Any, str, Any]]) -> None:
    """Raise a ConfigError naming both values for the first ``(model key, model value, data key,
    data value)`` that disagrees; a ``None`` on either side is not checked (unknown or not used)."""
    data_name = type(datamodule).__name__
    for key, value, data_key, data_value in checks:
        if value is None or data_value is None or value == data_value:
            continue
        raise ConfigError(
            key,
            f"{type(model).__name__} has {key}={value} but the data ({data_name}) has "
            f"{data_key}={data_value}; set model.init_args.{key}: {data_value} (or change the data)",
        )
