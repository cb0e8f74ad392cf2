from collections.abc import Mapping
from typing import Any

from leveret.bindings.direct import DirectIndex
from leveret.exchanges.base import register


@register
class DirectExchangeType:
    """Routes to bindings whose key equals the routing key."""

    name = "direct"

    def new_index(self, arguments: Mapping[str, Any]) -> DirectIndex:
        return DirectIndex()
