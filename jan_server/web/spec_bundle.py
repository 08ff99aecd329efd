"""The one loader of the OpenAPI document: openapi.yaml and the specs/*.yaml files it refers to, bundled.

Bundled, not inlined: every component of every file moves, under its own name, into the one document's
`components`, and every `$ref` (`specs/threads.yaml#/components/schemas/Thread`, or `common.yaml#/...`
inside specs/) becomes `#/components/schemas/Thread`. Names must therefore be unique across files. Connexion
is handed this document (it resolves the internal refs itself), and it is what /v1/openapi.json and
/v1/openapi.yaml serve, so generated clients and the console's "Schemas" see the spec's own names.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import yaml

COMPONENTS_PREFIX = "/components/"


class SpecError(ValueError):
    """The spec files cannot be bundled: a ref outside `components`, or one name used twice."""


def spec_path() -> Path:
    """openapi.yaml in a checkout (editable install), else the copy a plain install put in <prefix>/share."""
    checkout = Path(__file__).resolve().parents[2] / "openapi.yaml"
    if checkout.exists():
        return checkout
    return Path(sysconfig.get_path("data")) / "share" / "jan-server" / "openapi.yaml"


def load_yaml(path: Path) -> dict:
    with path.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream)


class Bundler:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.documents: dict[Path, dict] = {}
        self.origins: dict[tuple[str, str], Path] = {}  # (kind, name) -> the file that declared it

    def document(self, path: Path) -> dict:
        if path not in self.documents:
            self.documents[path] = load_yaml(path)
        return self.documents[path]

    def internal(self, ref: str, base: Path) -> str:
        """A ref made relative to the bundle: `<file>#/components/<kind>/<name>` -> `#/components/<kind>/<name>`."""
        location, _, pointer = ref.partition("#")
        target = (base.parent / location).resolve() if location else base
        kind, _, name = pointer.removeprefix(COMPONENTS_PREFIX).partition("/")
        if not pointer.startswith(COMPONENTS_PREFIX) or not kind or not name or "/" in name:
            raise SpecError(f"{base.name}: {ref!r} does not name a component")
        self.document(target)  # a file is bundled once something refers to it
        return f"#{COMPONENTS_PREFIX}{kind}/{name}"

    def rewrite(self, node, base: Path):
        if isinstance(node, dict):
            return {
                key: self.internal(value, base) if key == "$ref" and isinstance(value, str) else self.rewrite(value, base)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [self.rewrite(item, base) for item in node]
        return node

    def bundle(self) -> dict:
        root = self.document(self.root)
        spec = self.rewrite({key: value for key, value in root.items() if key != "components"}, self.root)
        components: dict[str, dict] = {}
        done: set[Path] = set()
        while pending := [path for path in self.documents if path not in done]:  # rewriting may load more files
            for path in pending:
                done.add(path)
                for kind, named in (self.documents[path].get("components") or {}).items():
                    for name, component in named.items():
                        self.add(components, kind, name, self.rewrite(component, path), path)
        spec["components"] = components
        return spec

    def add(self, components: dict, kind: str, name: str, component, path: Path) -> None:
        if (kind, name) in self.origins:
            raise SpecError(f"components/{kind}/{name} is declared in both {self.origins[kind, name].name} and {path.name}")
        self.origins[kind, name] = path
        components.setdefault(kind, {})[name] = component


def bundle(root: Path | None = None) -> dict:
    """The whole spec as one document."""
    return Bundler(root or spec_path()).bundle()
