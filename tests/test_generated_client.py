"""A client generated from the served spec by openapi-python-client names its types after the spec's components
and works against the live server."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import httpx
import pytest

from tests.test_spec import ADDED_OPERATIONS, SEED_OPERATIONS

PACKAGE = "jan_generated_client"


@pytest.fixture(scope="module")
def client_package(server, tmp_path_factory):
    """The generated package, imported from a temporary folder."""
    folder = tmp_path_factory.mktemp("generated")
    spec = folder / "openapi.json"
    spec.write_bytes(httpx.get(f"{server.api_url}/openapi.json", timeout=30).content)
    generator = Path(sys.executable).with_name("openapi-python-client")
    generated = subprocess.run(
        [str(generator), "generate", "--path", str(spec), "--meta", "none", "--output-path", str(folder / PACKAGE)],
        capture_output=True, text=True, timeout=300,
    )
    assert generated.returncode == 0 and "Warning" not in generated.stdout + generated.stderr, generated.stdout + generated.stderr
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def api_module(package, operation_id: str):
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in operation_id)
    tag = next(p.name for p in (Path(package.__file__).parent / "api").iterdir() if (p / f"{snake}.py").exists())
    return importlib.import_module(f"{package.__name__}.api.{tag}.{snake}")


def test_model_classes_are_named_after_the_components(client_package):
    models = importlib.import_module(f"{PACKAGE}.models")
    names = set(models.__all__)
    assert {"Thread", "ThreadMessage", "Assistant", "Model", "ChatCompletion", "ChatCompletionChunk", "ListThreadsResponse",
            "ListMessagesResponse", "Error", "ErrorResponse", "CreateThreadRequest", "CreateMessageRequest",
            "CreateChatCompletionRequest"} <= names
    assert not [name for name in names if name.endswith(("Response200", "BodyType0"))]
    for operation_id in ("createThread", "getThread", "modifyThread"):  # one Thread class, shared
        assert models.Thread in typing.get_args(inspect.signature(api_module(client_package, operation_id).sync).return_annotation)


def test_every_operation_has_a_function(client_package):
    for operation_id, _method, _path in SEED_OPERATIONS + ADDED_OPERATIONS:
        assert callable(api_module(client_package, operation_id).sync), operation_id


def test_generated_client_talks_to_the_server(client_package, server):
    models = importlib.import_module(f"{PACKAGE}.models")
    client = client_package.Client(base_url=server.api_url, timeout=httpx.Timeout(60), raise_on_unexpected_status=True)
    call = lambda op, *args, **kwargs: api_module(client_package, op).sync(*args, client=client, **kwargs)  # noqa: E731

    created = call("createThread", body=models.CreateThreadRequest(title="generated"))
    assert isinstance(created, models.Thread) and created.id.startswith("thread_")
    message = call("createMessage", created.id, body=models.CreateMessageRequest(role=models.MessageRole.USER, content="Hi"))
    assert isinstance(message, models.ThreadMessage) and message.thread_id == created.id
    listed = call("listMessages", created.id)
    assert isinstance(listed, models.ListMessagesResponse) and [m.id for m in listed.data] == [message.id]
    assert listed.data[0].content[0].text.value == "Hi"
    fetched = call("getThread", created.id)
    assert isinstance(fetched, models.Thread) and fetched.id == created.id and fetched.title == "generated"
    missing = call("getThread", "thread_missing")
    assert isinstance(missing, models.ErrorResponse) and missing.error.code == "thread_not_found"
