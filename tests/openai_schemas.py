"""OpenAI's published schemas (../shared/reference/openai-openapi.json, next to the checkout) as JSON Schema
validators, to check real response bodies against them."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "openai-openapi.json"


def _nullable(node):
    """The document is OpenAPI 3.1 but still marks some schemas `nullable` (3.0's way): spell those as JSON Schema."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


@functools.cache
def _components() -> dict:
    return _nullable(json.loads(REFERENCE.read_text())["components"])


def validate(body: dict, name: str) -> None:
    """Raise jsonschema.ValidationError unless `body` is a valid `name` (a schema in components.schemas)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": _components()}
    jsonschema.Draft202012Validator(schema).validate(body)
