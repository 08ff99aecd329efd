"""Validate real response bodies against OpenAI's published OpenAPI document, schema by name, with jsonschema.

The schemas come from `tests/openai_schemas.json`: the components of `../shared/reference/openai-openapi.json`
that the tests name (`SCHEMAS`) and those they refer to, extracted by running this file with the published
document's path, so the suite needs nothing outside the checkout. The document is OpenAPI 3.1 but still marks null
with 3.0's `nullable: true`, which JSON Schema ignores: it is rewritten as a `"null"` type (a None in an enum, a
null alternative beside a $ref)."""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

EXTRACT = Path(__file__).with_name("openai_schemas.json")
#: The OpenAI objects the tests validate.
SCHEMAS = [
    "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "CreateCompletionResponse",
    "CreateEmbeddingResponse", "Response", "ResponseStreamEvent", "ResponseItemList", "ConversationResource",
    "ConversationItem", "ConversationItemList", "OpenAIFile", "ListFilesResponse", "DeleteFileResponse", "VectorStoreObject",
    "ListVectorStoresResponse", "DeleteVectorStoreResponse", "VectorStoreFileObject", "ListVectorStoreFilesResponse",
    "DeleteVectorStoreFileResponse", "VectorStoreFileBatchObject", "VectorStoreFileContentResponse", "VectorStoreSearchResultsPage",
]


@functools.cache
def _registry() -> Registry:
    document = {"components": {"schemas": _nullable(json.loads(EXTRACT.read_text()))}}
    return Registry().with_resource("openai.json", DRAFT202012.create_resource(document))


def assert_valid(body: dict, schema: str) -> None:
    """Raise jsonschema's ValidationError unless `body` is a valid OpenAI `schema` (a components/schemas name)."""
    assert schema in SCHEMAS, f"add {schema} to SCHEMAS and extract again"
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


def extract(published: Path) -> dict:
    """SCHEMAS and every schema they refer to, from OpenAI's published document."""
    schemas = json.loads(published.read_text())["components"]["schemas"]
    found, waiting = {}, list(SCHEMAS)
    while waiting:
        name = waiting.pop()
        if name not in found:
            found[name] = schemas[name]
            waiting += re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(schemas[name]))
    return dict(sorted(found.items()))


if __name__ == "__main__":  # python tests/openai_reference.py ../shared/reference/openai-openapi.json
    EXTRACT.write_text(json.dumps(extract(Path(sys.argv[1])), indent=1, sort_keys=True) + "\n")
