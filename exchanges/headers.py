from collections.abc import Mapping
from typing import Any

from leveret.bindings.headers import HeadersIndex
from leveret.exchanges.base import PlainExchangeType


class HeadersExchangeType(PlainExchangeType):
    """Routes on message headers by the binding's `x-match` rule; routing keys are ignored."""

    name = "headers"
    description = __doc__ or ""

    def new_index(self, arguments: Mapping[str, Any]) -> HeadersIndex:
        return HeadersIndex()
