"""RabbitMQ's query parameters on lists and objects.

`columns=name,message_stats.publish`, `sort=messages&sort_reverse=true`,
`name=...&use_regex=true`, and `page` / `page_size` (which return RabbitMQ's
paged object instead of a list).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from leveret.management.routes import bad_request, truthy


def shape(result: Any, query: Mapping[str, str]) -> Any:
    """A handler's result as the query asks for it."""
    if isinstance(result, list):
        return list_query(result, query)
    if "columns" in query and isinstance(result, dict):
        return columns(result, query["columns"])
    return result


def list_query(items: list[Any], query: Mapping[str, str]) -> Any:
    name = query.get("name")
    if name:
        if truthy(query.get("use_regex")):
            try:
                pattern = re.compile(name)
            except re.error as error:
                raise bad_request(f"invalid regex: {error}") from None
            items = [i for i in items if pattern.search(str(i.get("name", "")))]
        else:
            items = [i for i in items if name in str(i.get("name", ""))]
    sort = query.get("sort")
    if sort:
        items = sorted(items, key=lambda i: _sort_key(_dig(i, sort)), reverse=truthy(query.get("sort_reverse")))
    if "columns" in query:
        items = [columns(i, query["columns"]) for i in items]
    if "page" not in query:
        return items
    try:
        page = max(1, int(query["page"]))
        page_size = max(1, min(500, int(query.get("page_size", "100"))))
    except ValueError:
        raise bad_request("page and page_size must be integers") from None
    page_count = max(1, -(-len(items) // page_size))
    return {
        "filtered_count": len(items), "item_count": len(items[(page - 1) * page_size: page * page_size]),
        "items": items[(page - 1) * page_size: page * page_size], "page": page,
        "page_count": page_count, "page_size": page_size, "total_count": len(items),
    }


def columns(item: Mapping[str, Any], wanted: str) -> dict[str, Any]:
    """RabbitMQ's `columns`: keep these fields; dotted names keep nested ones."""
    out: dict[str, Any] = {}
    for column in filter(None, (c.strip() for c in wanted.split(","))):
        parts = column.split(".")
        source: Any = item
        for part in parts:
            if not isinstance(source, Mapping) or part not in source:
                break
            source = source[part]
        else:
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = source
    return out


def _dig(item: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(item, Mapping):
            return None
        item = item.get(part)
    return item


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))
