"""Where each operation runs, as the spec declares it: the one place the bridge and the disconnect watcher ask.

An operation with `x-jan-runs: worker` (openapi.yaml) may hold its thread for long: it streams, waits in a
model's queue, or loads a model. Its requests run on the bridge's pool of worker threads and are watched for
their client leaving (jan_server.web.disconnect). Every other operation is quick and runs inline (see
jan_server.web.bridge), as do requests no operation matches (/health, /docs, unknown paths). A new operation
that streams or waits needs only the extension.

Connexion's routing middleware names the operation of a request in
`scope["extensions"]["connexion_routing"]["operation_id"]`, as the resolver resolved it (the handler's dotted
name, jan_server.web.dispatch.handler_name), so the table is keyed by that name.
"""

from __future__ import annotations

from connexion.middleware.abstract import ROUTING_CONTEXT
from starlette.types import Scope

from jan_server.web.dispatch import handler_name
from jan_server.web.spec_paths import HTTP_METHODS

EXTENSION = "x-jan-runs"
WORKER = "worker"


class RunModes:
    """The operations of a loaded spec that run on worker threads."""

    def __init__(self, paths: dict):
        workers = set()
        for template, item in paths.items():
            for method, operation in item.items():
                if method not in HTTP_METHODS or EXTENSION not in operation:
                    continue
                if operation[EXTENSION] != WORKER:
                    raise ValueError(f"{method.upper()} {template}: {EXTENSION} must be {WORKER!r} or absent, not {operation[EXTENSION]!r}")
                workers.add(handler_name(operation["tags"][0], operation["operationId"]))
        self.worker_operations = frozenset(workers)

    def on_worker(self, scope: Scope) -> bool:
        """Whether the routed request in `scope` runs on a worker thread."""
        return routed_operation(scope) in self.worker_operations


def routed_operation(scope: Scope) -> str | None:
    """The resolved operation Connexion's router found for the request; None if it found none (or has not run)."""
    return scope.get("extensions", {}).get(ROUTING_CONTEXT, {}).get("operation_id")
