"""Validate real response bodies against OpenAI's published OpenAPI document (../shared/reference, next to the
checkout), schema by name, with jsonschema. The document is OpenAPI 3.1 but still marks null with 3.0's
`nullable: true`, which JSON Schema ignores: it is rewritten as a `"null"` type (a None in an enum, a null
alternative beside a $ref)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "openai-openapi.json"


@functools.cache
def _registry() -> Registry:
    document = _nullable(json.loads(REFERENCE.read_text()))
    return Registry().with_resource("openai.json", DRAFT202012.create_resource(document))


def assert_valid(body: dict, schema: str) -> None:
    """Raise jsonschema's ValidationError unless `body` is a valid OpenAI `schema` (a components/schemas name)."""
    Draft202012Validator({"$ref": f"openai.json#/components/schemas/{schema}"}, registry=_registry()).validate(body)


def _nullable(node):
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False) is True:
        if isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
        if "$ref" in node:
            node["anyOf"] = [{"$ref": node.pop("$ref")}, {"type": "null"}]
    return node
