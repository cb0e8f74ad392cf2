from collections.abc import Mapping
from typing import Any

from leveret.bindings.fanout import FanoutIndex
from leveret.exchanges.base import PlainExchangeType


class FanoutExchangeType(PlainExchangeType):
    """Routes to every binding; keys are ignored."""

    name = "fanout"
    description = __doc__ or ""

    def new_index(self, arguments: Mapping[str, Any]) -> FanoutIndex:
        return FanoutIndex()
