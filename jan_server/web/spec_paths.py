"""What the spec's paths imply for routing, beyond what Connexion does itself.

- Trailing-slash paths (`/assistants/`) answer without the slash too: the seed declares `/assistants/`, while
  OpenAI clients call `/assistants`. A path is aliased only when its slash-less form is not itself a spec path
  (`/threads/{thread_id}/` and `/threads/{thread_id}` are different operations).
- A 405 names every method the path has (Connexion's router names only the first matching operation's).
"""

from __future__ import annotations

import re

#: Where the API is served: the spec's `servers` entry.
API_BASE_PATH = "/v1"
#: The bundled spec, as JSON (which /docs loads) and as YAML.
SPEC_URL = f"{API_BASE_PATH}/openapi.json"
SPEC_YAML_URL = f"{API_BASE_PATH}/openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def path_regex(base_path: str, template: str) -> re.Pattern:
    """`/threads/{thread_id}` -> a regex matching `/v1/threads/<one segment>`."""
    return re.compile("^" + re.escape(base_path) + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")


def slash_aliases(base_path: str, paths: dict) -> list[re.Pattern]:
    aliased = [p[:-1] for p in paths if p.endswith("/") and len(p) > 1 and p[:-1] not in paths]
    return [path_regex(base_path, p) for p in aliased]


class SlashAliasMiddleware:
    """ASGI middleware, placed before Connexion's routing, that appends the slash to aliased paths."""

    def __init__(self, app, patterns: list[re.Pattern]):
        self.app = app
        self.patterns = patterns

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and any(p.match(scope["path"]) for p in self.patterns):
            scope = {**scope, "path": scope["path"] + "/", "raw_path": (scope.get("raw_path") or scope["path"].encode()) + b"/"}
        await self.app(scope, receive, send)


class AllowedMethods:
    """The methods the spec declares for a request path, for the Allow header of a 405."""

    def __init__(self, base_path: str, paths: dict):
        self.routes = [
            (path_regex(base_path, template), sorted(m.upper() for m in item if m in HTTP_METHODS))
            for template, item in paths.items()
        ]

    def __call__(self, path: str) -> list[str]:
        for regex, methods in self.routes:
            if regex.match(path):
                return methods
        return []
