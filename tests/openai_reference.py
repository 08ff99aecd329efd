"""Bodies checked against OpenAI's published OpenAPI document (`../shared/reference/openai-openapi.json`, next to
the checkout), with jsonschema: its components are JSON Schema 2020-12 (OpenAPI 3.1)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from jsonschema import Draft202012Validator

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openai-openapi.json"


@functools.cache
def _components() -> dict:
    return json.loads(REFERENCE.read_text())["components"]


def assert_valid(body: dict, schema: str) -> None:
    """`body` validates against the reference's `components.schemas[schema]`."""
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": _components()})
    errors = sorted(validator.iter_errors(body), key=lambda error: list(error.absolute_path))
    assert not errors, f"{schema}: {errors[0].message} at {list(errors[0].absolute_path)}"
