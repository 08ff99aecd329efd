"""The OpenAPI document: the 25 seed operations and those the project adds, bundled, valid, documented, and its examples work on the
real server."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import yaml
from connexion.json_schema import resolve_refs
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from jan_server.web.spec_bundle import spec_path

# (operationId, method, path) of every operation in Jan's seed spec, paths exactly as the seed has them.
SEED_OPERATIONS = [
    ("createChatCompletion", "post", "/chat/completions"),
    ("listModels", "get", "/models"),
    ("downloadModel", "post", "/models"),
    ("retrieveModel", "get", "/models/{model_id}"),
    ("deleteModel", "delete", "/models/{model_id}"),
    ("startModel", "put", "/models/{model_id}/start"),
    ("stopModel", "put", "/models/{model_id}/stop"),
    ("createThread", "post", "/threads"),
    ("listThreads", "get", "/threads"),
    ("getThread", "get", "/threads/{thread_id}"),
    ("modifyThread", "post", "/threads/{thread_id}"),
    ("deleteThread", "delete", "/threads/{thread_id}"),
    ("getThreadAssistants", "get", "/threads/{thread_id}/assistants"),
    ("postThreadAssistants", "post", "/threads/{thread_id}/assistants/{assistants_id}"),
    ("listThreadMessage", "get", "/threads/{thread_id}/"),
    ("listAssistants", "get", "/assistants/"),
    ("createAssistant", "post", "/assistants/"),
    ("getAssistant", "get", "/assistants/{assistant_id}"),
    ("modifyAssistant", "post", "/assistants/{assistant_id}"),
    ("deleteAssistant", "delete", "/assistants/{assistant_id}"),
    ("listMessages", "get", "/threads/{thread_id}/messages"),
    ("createMessage", "post", "/threads/{thread_id}/messages"),
    ("retrieveMessage", "get", "/threads/{thread_id}/messages/{message_id}"),
    ("listMessageFiles", "get", "/threads/{thread_id}/messages/{message_id}/files"),
    ("retrieveMessageFile", "get", "/threads/{thread_id}/messages/{message_id}/files/{file_id}"),
]

# Operations the project adds to the seed's: for OpenAI clients (the spec's description lists them), and the
# Prometheus scrape.
ADDED_OPERATIONS = [
    ("modifyMessage", "post", "/threads/{thread_id}/messages/{message_id}"),
    ("deleteMessage", "delete", "/threads/{thread_id}/messages/{message_id}"),
    ("createCompletion", "post", "/completions"),
    ("createEmbedding", "post", "/embeddings"),
    ("getMetrics", "get", "/metrics"),
    # OpenAI's Responses and Conversations APIs (issue 13)
    ("createResponse", "post", "/responses"),
    ("getResponse", "get", "/responses/{response_id}"),
    ("deleteResponse", "delete", "/responses/{response_id}"),
    ("cancelResponse", "post", "/responses/{response_id}/cancel"),
    ("listInputItems", "get", "/responses/{response_id}/input_items"),
    ("createConversation", "post", "/conversations"),
    ("getConversation", "get", "/conversations/{conversation_id}"),
    ("updateConversation", "post", "/conversations/{conversation_id}"),
    ("deleteConversation", "delete", "/conversations/{conversation_id}"),
    ("createConversationItems", "post", "/conversations/{conversation_id}/items"),
    ("listConversationItems", "get", "/conversations/{conversation_id}/items"),
    ("getConversationItem", "get", "/conversations/{conversation_id}/items/{item_id}"),
    ("deleteConversationItem", "delete", "/conversations/{conversation_id}/items/{item_id}"),
    # Anthropic's Messages API (issue 28)
    ("createAnthropicMessage", "post", "/messages"),
    ("countAnthropicMessageTokens", "post", "/messages/count_tokens"),
    # OpenAI's Files API (issue 30)
    ("createFile", "post", "/files"),
    ("listFiles", "get", "/files"),
    ("retrieveFile", "get", "/files/{file_id}"),
    ("deleteFile", "delete", "/files/{file_id}"),
    ("downloadFile", "get", "/files/{file_id}/content"),
    # Coding agents on the Responses API (issue 29)
    ("compactResponse", "post", "/responses/compact"),
    ("countResponseInputTokens", "post", "/responses/input_tokens"),
    # OpenAI's vector stores (issue 30)
    ("createVectorStore", "post", "/vector_stores"),
    ("listVectorStores", "get", "/vector_stores"),
    ("getVectorStore", "get", "/vector_stores/{vector_store_id}"),
    ("modifyVectorStore", "post", "/vector_stores/{vector_store_id}"),
    ("deleteVectorStore", "delete", "/vector_stores/{vector_store_id}"),
    ("createVectorStoreFile", "post", "/vector_stores/{vector_store_id}/files"),
    ("listVectorStoreFiles", "get", "/vector_stores/{vector_store_id}/files"),
    ("getVectorStoreFile", "get", "/vector_stores/{vector_store_id}/files/{file_id}"),
    ("updateVectorStoreFileAttributes", "post", "/vector_stores/{vector_store_id}/files/{file_id}"),
    ("deleteVectorStoreFile", "delete", "/vector_stores/{vector_store_id}/files/{file_id}"),
    ("retrieveVectorStoreFileContent", "get", "/vector_stores/{vector_store_id}/files/{file_id}/content"),
    ("createVectorStoreFileBatch", "post", "/vector_stores/{vector_store_id}/file_batches"),
    ("getVectorStoreFileBatch", "get", "/vector_stores/{vector_store_id}/file_batches/{batch_id}"),
    ("cancelVectorStoreFileBatch", "post", "/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel"),
    ("listFilesInVectorStoreBatch", "get", "/vector_stores/{vector_store_id}/file_batches/{batch_id}/files"),
    ("searchVectorStore", "post", "/vector_stores/{vector_store_id}/search"),
]

# The order in which the examples run: creates come before the operations that need their generated ids.
EXAMPLE_ORDER = [
    "listModels", "retrieveModel", "startModel", "createChatCompletion", "stopModel",
    "createFile", "listFiles", "retrieveFile", "downloadFile",
    "createVectorStore", "listVectorStores", "createVectorStoreFile", "listVectorStoreFiles", "getVectorStoreFile",
    "updateVectorStoreFileAttributes", "retrieveVectorStoreFileContent", "createVectorStoreFileBatch", "getVectorStoreFileBatch",
    "cancelVectorStoreFileBatch", "listFilesInVectorStoreBatch", "searchVectorStore", "getVectorStore", "modifyVectorStore",
    "createAssistant", "createThread", "listThreads", "getThread", "modifyThread",
    "postThreadAssistants", "getThreadAssistants", "listThreadMessage",
    "listAssistants", "getAssistant", "modifyAssistant",
    "createMessage", "listMessages", "retrieveMessage", "listMessageFiles", "retrieveMessageFile",
    "modifyMessage", "deleteMessage", "deleteThread", "deleteAssistant",
    "createCompletion", "createEmbedding", "createAnthropicMessage", "countAnthropicMessageTokens",
    "createResponse", "getResponse", "cancelResponse", "listInputItems", "compactResponse", "countResponseInputTokens",
    "createConversation", "createConversationItems", "listConversationItems", "getConversationItem",
    "getConversation", "updateConversation", "deleteConversationItem", "deleteConversation", "deleteResponse",
    "deleteVectorStoreFile", "deleteVectorStore", "deleteFile", "getMetrics",
]
# Not run here: downloadModel's example fetches from the internet, and deleteModel's deletes that download.
NOT_RUN = {"downloadModel", "deleteModel"}

# Which create operation's result supplies each generated-id path parameter.
ID_SOURCES = {"createFile": "file_id", "createThread": "thread_id", "createAssistant": "assistant_id", "createMessage": "message_id",
              "createResponse": "response_id", "createConversation": "conversation_id", "createConversationItems": "item_id",
              "createVectorStore": "vector_store_id", "createVectorStoreFileBatch": "batch_id"}
ID_ALIASES = {"assistants_id": "assistant_id"}


@pytest.fixture(scope="module")
def bundled(server) -> dict:
    """The spec as served: bundled, its refs pointing into its own components."""
    response = httpx.get(f"{server.api_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def served(bundled) -> dict:
    """The served spec with its refs resolved, as a client reads it."""
    return resolve_refs(bundled)


def operations(spec: dict):
    """(operationId, method, path, operation with the path-level parameters merged in)."""
    for path, item in spec["paths"].items():
        for method in ("get", "post", "put", "delete", "patch"):
            if method in item:
                operation = dict(item[method])
                names = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
                inherited = [p for p in item.get("parameters", []) if (p["in"], p["name"]) not in names]
                operation["parameters"] = inherited + operation.get("parameters", [])
                yield operation["operationId"], method, path, operation


def test_served_spec_has_every_seed_operation(served):
    served_operations = {(op_id, method, path) for op_id, method, path, _ in operations(served)}
    assert served_operations == set(SEED_OPERATIONS) | set(ADDED_OPERATIONS)
    assert served["servers"] == [{"url": "/v1"}]


def refs(node) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [ref for value in node.values() for ref in refs(value)]
    return [ref for item in node for ref in refs(item)] if isinstance(node, list) else []


def test_served_spec_is_bundled(bundled, server):
    """Swagger UI and client generators fetch only /v1/openapi.json: every component of specs/*.yaml is in it,
    under its own name, and every ref points into it."""
    declared = {(kind, name) for path in spec_path().parent.glob("specs/*.yaml")
                for kind, named in yaml.safe_load(path.read_text())["components"].items() for name in named}
    served_names = {(kind, name) for kind, named in bundled["components"].items() for name in named}
    assert declared and declared <= served_names
    all_refs = refs(bundled)
    assert all_refs and all(ref.startswith("#/components/") for ref in all_refs)
    for ref in all_refs:
        kind, name = ref.removeprefix("#/components/").split("/")
        assert name in bundled["components"][kind], ref
    as_yaml = httpx.get(f"{server.api_url}/openapi.yaml", timeout=30)
    assert as_yaml.status_code == 200 and as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == bundled


def test_spec_files_validate():
    spec, base_uri = read_from_filename(str(spec_path()))
    validate(spec, base_uri=base_uri)


def test_served_spec_validates(bundled):
    validate(bundled)


def test_every_operation_is_documented(served):
    for op_id, _method, _path, operation in operations(served):
        assert operation.get("summary", "").strip(), op_id
        assert operation.get("description", "").strip(), op_id
        codes = set(operation["responses"])
        assert any(code.startswith("2") for code in codes), op_id
        assert any(code[0] in "45" or code == "default" for code in codes), f"{op_id} declares no error response"
        for code, response in operation["responses"].items():
            if code[0] in "45" or code == "default":
                schema = response["content"]["application/json"]["schema"]
                shape = ["type", "error"] if "Anthropic Messages" in operation["tags"] else ["error"]  # Anthropic's envelope
                assert schema["required"] == shape, f"{op_id} {code} is not the shared error shape"
        if "requestBody" in operation:
            media = next(iter(operation["requestBody"]["content"].values()))
            assert media.get("examples") or "example" in media, f"{op_id} has no request example"


def test_path_parameters_are_named_as_in_the_template(served):
    for op_id, _method, path, operation in operations(served):
        in_template = set(re.findall(r"{([^}]+)}", path))
        declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert declared == in_template, op_id
        assert all(p["required"] for p in operation["parameters"] if p["in"] == "path"), op_id


def request_examples(operation: dict) -> list:
    if "requestBody" not in operation:
        return [None]
    media = next(iter(operation["requestBody"]["content"].values()))
    if "examples" in media:
        return [example["value"] for example in media["examples"].values()]
    return [media["example"]]


def assert_conforms(operation: dict, response: httpx.Response) -> None:
    declared = operation["responses"].get(str(response.status_code)) or operation["responses"]["default"]
    content_type = response.headers["content-type"].split(";")[0]
    declared_types = {media_type.split(";")[0]: media_type for media_type in declared["content"]}  # text/plain; version=0.0.4
    assert content_type in declared_types, f"{operation['operationId']}: undeclared {content_type}"
    if content_type == "application/json":
        errors = list(OAS30Validator(declared["content"][content_type]["schema"]).iter_errors(response.json()))
        assert not errors, f"{operation['operationId']} {response.status_code}: {errors[0].message}"
    elif content_type == "text/event-stream" and '"type":"response.' in response.text:  # typed events end with the final response
        last = response.text.rstrip().splitlines()[-1]
        assert last.startswith(('data: {"type":"response.completed"', 'data: {"type":"response.incomplete"')), last[:200]
    elif content_type == "text/event-stream" and response.text.startswith("event: message_start"):  # Anthropic's events
        assert response.text.rstrip().endswith('data: {"type":"message_stop"}')
    elif content_type == "text/event-stream":
        assert response.text.rstrip().endswith("data: [DONE]")
    elif content_type == "application/octet-stream":  # a file's bytes, as uploaded
        assert response.content and int(response.headers["content-length"]) == len(response.content)
    else:
        assert declared_types[content_type] == "text/plain; version=0.0.4"
        assert response.headers["content-type"].startswith(declared_types[content_type])
        assert "# TYPE jan_requests_total counter" in response.text


#: The example id of a kind, which the console replaces in a request body with the most recent id of that kind.
PLACEHOLDERS = {"file-abc123": "file_id", "vs_abc123": "vector_store_id"}


def send(api: httpx.Client, method: str, url: str, operation: dict, body, ids: dict) -> httpx.Response:
    return api.request(method.upper(), url, **example_request(operation, body, ids))


def example_request(operation: dict, body, ids: dict) -> dict:
    """httpx's arguments for the request "Try it out" sends for an example: JSON, or a multipart form whose `file`
    is the example's text."""
    if "multipart/form-data" in operation.get("requestBody", {}).get("content", {}):
        fields = {key: value for key, value in body.items() if key != "file"}
        return {"data": fields, "files": {"file": ("example.txt", body["file"].encode())}}
    if body is None:
        return {}
    text = json.dumps(body)
    for placeholder, kind in PLACEHOLDERS.items():
        text = text.replace(json.dumps(placeholder), json.dumps(ids.get(kind, placeholder)))
    return {"content": text, "headers": {"content-type": "application/json"}}


def test_documented_examples_work(served, api):
    """What Swagger UI's "Try it out" sends for each example gets a 2xx that matches the spec."""
    by_id = {op_id: (method, path, operation) for op_id, method, path, operation in operations(served)}
    assert set(EXAMPLE_ORDER) | NOT_RUN == set(by_id)
    ids: dict[str, str] = {}
    for op_id in EXAMPLE_ORDER:
        method, path, operation = by_id[op_id]
        values = {}
        for param in operation["parameters"]:
            if param["in"] == "path":
                values[param["name"]] = param.get("example") or ids[ID_ALIASES.get(param["name"], param["name"])]
        url = path.format(**values).lstrip("/")
        for body in request_examples(operation):
            response = send(api, method, url, operation, body, ids)
            assert 200 <= response.status_code < 300, f"{op_id} with {body}: {response.status_code} {response.text}"
            assert_conforms(operation, response)
            if op_id in ID_SOURCES and ID_SOURCES[op_id] not in ids:
                made = response.json()
                ids[ID_SOURCES[op_id]] = made["id"] if "id" in made else made["data"][0]["id"]  # a list of items


UNKNOWN_IDS = {"thread_id": "thread_missing", "assistant_id": "asst_missing", "assistants_id": "asst_missing",
               "message_id": "msg_missing", "file_id": "file-missing", "model_id": "no-such-model",
               "response_id": "resp_missing", "conversation_id": "conv_missing", "item_id": "msg_missing",
               "vector_store_id": "vs_missing", "batch_id": "vsfb_missing"}


def test_unknown_ids_get_the_declared_404(served, api):
    for op_id, method, path, operation in operations(served):
        if "{" not in path:
            continue
        url = path.format(**{name: UNKNOWN_IDS[name] for name in re.findall(r"{([^}]+)}", path)}).lstrip("/")
        response = send(api, method, url, operation, request_examples(operation)[0], {})
        assert response.status_code == 404, f"{op_id}: {response.status_code} {response.text}"
        assert_conforms(operation, response)
        assert response.json()["error"]["code"].endswith("_not_found")


def request_schema(served: dict, operation_id: str) -> dict:
    operation = next(operation for op_id, _m, _p, operation in operations(served) if op_id == operation_id)
    return operation["requestBody"]["content"]["application/json"]["schema"]


@pytest.mark.parametrize("operation_id, body, valid", [
    ("createChatCompletion", {"top_logprobs": 2}, False),
    ("createChatCompletion", {"top_logprobs": 2, "logprobs": False}, False),
    ("createChatCompletion", {"top_logprobs": 2, "logprobs": None}, False),
    ("createChatCompletion", {"top_logprobs": 2, "logprobs": True}, True),
    ("createChatCompletion", {"top_logprobs": None, "logprobs": False}, True),
    ("createCompletion", {"best_of": 0}, False),
    ("createCompletion", {"best_of": 1}, True),
])
def test_rules_a_schema_can_state_are_in_it(served, operation_id, body, valid):
    """What the server refuses of a request, whatever the model, the schema refuses where its dialect can say it,
    so that clients and generated tests know it (OpenAPI 3.0 has no if/then: an anyOf says `top_logprobs`
    needs `logprobs: true`)."""
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "prompt": "Hi", **body}
    if operation_id == "createCompletion":
        del body["messages"]
    else:
        del body["prompt"]
    errors = list(OAS30Validator(request_schema(served, operation_id)).iter_errors(body))
    assert (errors == []) == valid, errors


def test_model_dependent_fields_are_request_fields(served):
    """`x-jan-model-dependent` names fields of the operation's request body (the contract test lets a 400 that
    names one of them answer a schema-valid request)."""
    declared = {op_id: operation["x-jan-model-dependent"] for op_id, _m, _p, operation in operations(served) if "x-jan-model-dependent" in operation}
    assert {"createChatCompletion", "createCompletion", "createEmbedding"} <= set(declared)
    for op_id, fields in declared.items():
        assert set(fields) <= set(request_schema(served, op_id)["properties"]), op_id
