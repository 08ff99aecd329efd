"""Model aliases: model names a client insists on (Claude Code's `claude-…`, a script's `gpt-4o`) served by a local
or remote model. Each is `PATTERN=MODEL`, the pattern a glob (`*`, `?`, `[…]`, case-sensitive); the first pattern
that matches a requested name wins, and a name that is a model's own id is never aliased."""

from __future__ import annotations

import fnmatch

from jan_server.errors import InvalidRequestError
from jan_server.models.registry import validate_model_id


class Aliases:
    def __init__(self, declared: tuple[str, ...] = ()):
        self.rules = [rule(text) for text in declared]

    def target(self, name: str) -> str | None:
        """The model the first matching pattern names, or None."""
        return next((model for pattern, model in self.rules if fnmatch.fnmatchcase(name, pattern)), None)

    def of(self, model_id: str) -> list[str]:
        """The patterns that name this model."""
        return [pattern for pattern, model in self.rules if model == model_id]


def rule(text: str) -> tuple[str, str]:
    """`claude-*=my-coder` -> ("claude-*", "my-coder"); ValueError for anything else."""
    pattern, equals, model = (part.strip() for part in text.partition("="))
    if not equals or not pattern or not model:
        raise ValueError(f"a model alias is PATTERN=MODEL, not {text!r}")
    try:
        validate_model_id(model)
    except InvalidRequestError as exc:
        raise ValueError(f"model alias {text!r}: {exc.message}") from None
    return pattern, model
