from collections.abc import Mapping
from typing import Any

from leveret.bindings.topic_index import TopicIndex
from leveret.exchanges.base import PlainExchangeType


class TopicExchangeType(PlainExchangeType):
    """`*` matches exactly one word, `#` zero or more; words split on '.' and may be empty."""

    name = "topic"
    description = __doc__ or ""

    def new_index(self, arguments: Mapping[str, Any]) -> TopicIndex:
        return TopicIndex()
