"""Validate bodies against the components of OpenAI's published spec (`../shared/reference/openai-openapi.json`,
beside the repository), with jsonschema: OpenAI's spec is OpenAPI 3.1, whose schemas are JSON Schema 2020-12."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "openai-openapi.json"


@functools.cache
def _components() -> dict:
    return json.loads(REFERENCE.read_text())["components"]


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": _components()})


def assert_valid(name: str, body) -> None:
    """`body` is a valid OpenAI `name` (e.g. "Response"); else the best-matching error, with its path."""
    error = best_match(validator(name).iter_errors(body))  # within anyOf/oneOf, the branch that matched best
    assert error is None, f"not a valid {name}: {error.message[:500]} at {list(error.absolute_path)}\n{json.dumps(body)[:2000]}"
