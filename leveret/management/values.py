"""Small value shapes the API's resources share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def with_rates(counts: Mapping[str, int], rate: Callable[[str], float]) -> dict[str, Any]:
    """{"publish": 5, "publish_details": {"rate": 1.2}, ...} as RabbitMQ nests them."""
    out: dict[str, Any] = {}
    for field, value in counts.items():
        out[field] = value
        out[f"{field}_details"] = {"rate": rate(field)}
    return out
