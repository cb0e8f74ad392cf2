from collections.abc import Mapping
from typing import Any

from leveret.bindings.fanout import FanoutIndex
from leveret.exchanges.base import register


@register
class FanoutExchangeType:
    """Routes to every binding; keys are ignored."""

    name = "fanout"

    def new_index(self, arguments: Mapping[str, Any]) -> FanoutIndex:
        return FanoutIndex()
