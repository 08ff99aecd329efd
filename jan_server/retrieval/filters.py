"""OpenAI's attribute filters: comparison filters (`eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`, `nin` of a key against
a value) and compound ones (`and`, `or` of filters), over a file's `attributes` (the spec checks their shape).

As on OpenAI, a file without the key, or whose value is of another type than the filter's, does not match (for
`ne` and `nin` either): a filter on an attribute no file has finds nothing, it is no error.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

ORDERED = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


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
    if kind in ("in", "nin"):  # a single value stands for a list of one
        values = want if isinstance(want, list) else [want]
        return any(same_type(have, value) for value in values) and ((have in values) == (kind == "in"))
    if not same_type(have, want):
        return False
    if kind in ("eq", "ne"):
        return (have == want) == (kind == "eq")
    return not isinstance(have, bool) and ORDERED[kind](have, want)


def same_type(a, b) -> bool:
    """Strings with strings, booleans with booleans, numbers with numbers."""
    kind = lambda value: bool if isinstance(value, bool) else (int if isinstance(value, (int, float)) else type(value))
    return kind(a) is kind(b)
