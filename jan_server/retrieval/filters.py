"""OpenAI's attribute filters: comparison filters (`eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`, `nin` of a key against
a value) and compound ones (`and`, `or` of filters), over a file's `attributes`.

As on OpenAI, a file without the key, or whose value is of another type than the filter's, does not match (for
`ne` and `nin` either): a filter on an attribute no file has finds nothing, it is no error.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

from jan_server.errors import InvalidRequestError

ORDERED = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
#: How deep compound filters may nest.
MAX_DEPTH = 8


def check(node, depth: int = 0) -> None:
    """A 400 naming `filters` for a filter the schema could not check (compound filters nested past its first level)."""
    if depth > MAX_DEPTH:
        raise InvalidRequestError(f"filters may nest at most {MAX_DEPTH} levels.", param="filters")
    if not isinstance(node, Mapping):
        raise InvalidRequestError("Each filter must be an object.", param="filters")
    if node.get("type") in ("and", "or"):
        if not isinstance(node.get("filters"), list):
            raise InvalidRequestError("A compound filter needs a list of `filters`.", param="filters")
        for child in node["filters"]:
            check(child, depth + 1)
        return
    if node.get("type") not in (*ORDERED, "eq", "ne", "in", "nin") or not isinstance(node.get("key"), str) or "value" not in node:
        raise InvalidRequestError("A comparison filter needs `type`, `key` and `value`.", param="filters")
    if node["type"] in ("in", "nin") and not isinstance(node["value"], list):
        raise InvalidRequestError(f"`{node['type']}` compares with a list of values.", param="filters")


def matches(node: Mapping, attributes: Mapping | None) -> bool:
    kind = node["type"]
    if kind == "and":
        return all(matches(child, attributes) for child in node["filters"])
    if kind == "or":
        return any(matches(child, attributes) for child in node["filters"])
    attributes = attributes or {}
    if node["key"] not in attributes:
        return False
    have, want = attributes[node["key"]], node["value"]
    if kind in ("in", "nin"):
        return any(same_type(have, value) for value in want) and ((have in want) == (kind == "in"))
    if not same_type(have, want):
        return False
    if kind in ("eq", "ne"):
        return (have == want) == (kind == "eq")
    return not isinstance(have, bool) and ORDERED[kind](have, want)


def same_type(a, b) -> bool:
    """Strings with strings, booleans with booleans, numbers with numbers."""
    kind = lambda value: bool if isinstance(value, bool) else (int if isinstance(value, (int, float)) else type(value))
    return kind(a) is kind(b)
