from collections.abc import Mapping
from typing import Any

from bindings.headers import HeadersIndex
from exchanges.base import register


@register
class HeadersExchangeType:
    """Routes on message headers by the binding's `x-match` rule; routing keys are ignored."""

    name = "headers"

    def new_index(self, arguments: Mapping[str, Any]) -> HeadersIndex:
        return HeadersIndex()
