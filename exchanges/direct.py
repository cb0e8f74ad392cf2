from collections.abc import Mapping
from typing import Any

from leveret.bindings.direct import DirectIndex
from leveret.exchanges.base import PlainExchangeType


class DirectExchangeType(PlainExchangeType):
    """Routes to bindings whose key equals the routing key."""

    name = "direct"
    description = __doc__ or ""

    def new_index(self, arguments: Mapping[str, Any]) -> DirectIndex:
        return DirectIndex()
