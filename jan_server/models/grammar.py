"""Output formats as llama.cpp grammars: a JSON object, or JSON following a schema (chat's `response_format`,
Responses' `text.format`), so the output always parses."""

from __future__ import annotations

import json

from jan_server.errors import InvalidRequestError


def grammar_of(response_format: dict | None, schema_param: str = "response_format.json_schema.schema") -> str | None:
    """GBNF that constrains the output to JSON (any object, or the given JSON schema); None for plain text.
    `response_format` is chat's shape ({"type", "json_schema": {"schema"}}); `schema_param` names the request
    field of the schema in the error for one that cannot be converted."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    if schema is None:
        return JSON_GBNF
    try:
        return strict_strings(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors on schemas it cannot handle
        raise InvalidRequestError(f"Unsupported JSON schema: {exc}", param=schema_param, code="invalid_json_schema") from None


#: llama-cpp-python's schema converter lets a JSON string hold raw control characters (its `char` rule is
#: `[^"\\]`; llama.cpp's own converter and JSON_GBNF exclude them), which JSON parsers refuse.
LAX_CHAR = 'char ::= [^"\\\\] |'
STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def strict_strings(gbnf: str) -> str:
    """The converter's grammar with JSON strings that cannot hold raw control characters."""
    return gbnf.replace(LAX_CHAR, STRICT_CHAR)
