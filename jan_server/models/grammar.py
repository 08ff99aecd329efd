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


#: The keywords from which llama-cpp-python's converter tells a schema's kind. A schema with none of them (e.g.
#: `{"description": "…"}`, any value to JSON Schema, as Claude Code's tools have) it refuses.
KINDS = frozenset({"type", "$ref", "oneOf", "anyOf", "allOf", "not", "const", "enum", "properties", "additionalProperties",
                   "items", "prefixItems", "pattern", "format"})
ANY_TYPE = ["string", "number", "integer", "boolean", "object", "array", "null"]
#: The converter writes an upper bound of repeats as that many nested optional rules: Claude Code's `maxLength:
#: 524288` makes 4 MB of grammar. Larger bounds are left out (the request's token limit bounds the output).
MAX_REPEAT = 256
BOUNDS = ("maxLength", "maxItems")


def convertible(schema):
    """The schema as the converter takes it: each subschema that names no kind given every JSON type (which means
    the same), upper bounds over MAX_REPEAT left out."""
    if not isinstance(schema, dict):
        return schema
    out = {key: value for key, value in schema.items() if not (key in BOUNDS and isinstance(value, int) and value > MAX_REPEAT)}
    if not KINDS & out.keys():
        out["type"] = ANY_TYPE
    for key in ("properties", "$defs", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {name: convertible(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = convertible(out[key])
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = [convertible(sub) for sub in out[key]]
    return out
