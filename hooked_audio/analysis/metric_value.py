"""A sweep's metric result as one number, or a clear error when the metric returns one value per row."""

from __future__ import annotations

import torch


def metric_value(value, what: str = "metric") -> float:
    """``float(value)`` for a scalar (a Python number or a one-element tensor); a metric that returns several
    values (e.g. one per row) is refused with how to reduce it."""
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(f"{what} must return one number, got a tensor of shape {tuple(value.shape)}: reduce it "
                         "(e.g. .mean() over rows) inside the metric")
    return float(value)
