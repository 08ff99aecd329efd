"""Schemathesis hooks for tests/test_contract.py (loaded through SCHEMATHESIS_HOOKS=tests.contract_hooks).

They keep each generated request cheap and local without changing whether it is schema-valid: every value
changed here stays within its schema's bounds, so negative cases stay negative and positive ones positive.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import schemathesis
import yaml

#: The largest completion a generated chat request may ask for.
MAX_TOKENS = 4
#: A generated prompt's most messages, and characters per message; its most tools (each described in the prompt).
MAX_MESSAGES = 4
MAX_CHARS = 256
MAX_TOOLS = 2
#: The most choices a generated chat request may ask for: the contract server's model runs the default 8
#: sequences (n_parallel, which the schema cannot know; more is a 400 on `n`).
MAX_CHOICES = 8
#: A generated completion's or embedding's most prompts (or inputs), and tokens per token array.
MAX_PROMPTS = 4
MAX_PROMPT_TOKENS = 64
#: The bundled model's vocabulary size and embedding dimension (the schema cannot know them).
VOCABULARY = 49152
DIMENSIONS = 576
#: The block types the Messages API takes and refuses (no vision or document model, no server tools), from the spec.
UNSUPPORTED_BLOCKS = set(yaml.safe_load((Path(__file__).parent.parent / "specs" / "anthropic.yaml").read_text())["components"]["schemas"]
                         ["UnsupportedBlockParam"]["properties"]["type"]["enum"])
#: Nothing listens on the discard port: downloads there fail at once.
CLOSED_PORT = "127.0.0.1:9"
#: An object id's rule (a file id's among them), read from the spec.
OBJECT_ID = re.compile(yaml.safe_load((Path(__file__).parent.parent / "specs" / "common.yaml").read_text())["components"]["schemas"]["ObjectId"]["pattern"])
_MODELS_SPEC = yaml.safe_load((Path(__file__).parent.parent / "specs" / "models.yaml").read_text())
#: The model generated responses use, and the rule of a model id, read from the spec.
BUNDLED_MODEL = "smollm2-135m-instruct"
MODEL_ID = re.compile(_MODELS_SPEC["components"]["schemas"]["ModelId"]["pattern"])
#: downloadModel's source_url rule, read from the spec.
SOURCE_URL = re.compile(_MODELS_SPEC["components"]["schemas"]["DownloadModelRequest"]["properties"]["source_url"]["pattern"])
#: Where remote models point: the server under test itself (tests/test_contract.py says where it is), so that
#: starting one (which asks its upstream for its models) succeeds.
UPSTREAM = os.environ.get("JAN_CONTRACT_UPSTREAM", f"http://{CLOSED_PORT}/v1")
_REMOTE_SETTINGS = yaml.safe_load((Path(__file__).parent.parent / "specs" / "remote.yaml").read_text())["components"]["schemas"]["RemoteModelSettings"]["properties"]
#: A remote model's base_url rule, read from the spec.
BASE_URL = re.compile(_REMOTE_SETTINGS["base_url"]["pattern"])
#: A remote model's api_key_env rule, read from the spec, and the prefix the server allows by default (a variable
#: without it is a 400, which the schema cannot say).
KEY_ENV = re.compile(_REMOTE_SETTINGS["api_key_env"]["pattern"])
KEY_ENV_PREFIX = "JAN_REMOTE_"


@schemathesis.hook
def before_call(ctx, case, **kwargs) -> None:
    bounded(case)


@schemathesis.check
def refused_only_by_the_model(ctx, response, case) -> None:
    """A schema-valid request answered 400 names a field its operation lists as `x-jan-model-dependent`: one
    whose values the model may refuse though the schema takes them (tests/schemathesis.toml lets such an
    operation's positive_data_acceptance take a 400; this check keeps every other 400 a failure)."""
    fields = case.operation.definition.raw.get("x-jan-model-dependent")
    meta = getattr(case, "meta", None)
    if not fields or response.status_code != 400 or meta is None or not meta.generation.mode.is_positive or case.media_type != "application/json":
        return
    error = response.json().get("error") or {}
    param = error.get("param") or anthropic_field(error.get("message") or "")
    assert re.split(r"[.\[]", param)[0] in fields, f"Schema-valid data refused for a reason the model does not decide: {response.text[:500]}"


def anthropic_field(message: str) -> str:
    """The field an Anthropic error message leads with (`messages.0.content: ...`); a prompt too long is `messages`'s."""
    return "messages" if message.startswith("prompt is too long") else message.split(":")[0]


def stored_file_id() -> str:
    """A file the server under test stores, uploaded now (the run may delete any file it learnt the id of)."""
    response = httpx.post(f"{UPSTREAM}/files", files={"file": ("contract.txt", b"contract")}, data={"purpose": "assistants"}, timeout=60)
    return response.json()["id"]


def attached_files_stored(message) -> None:
    """A message's well-formed file ids (in `file_ids` and `attachments`) name a stored file: one that names none is a
    404 the schema cannot state, which schemathesis would take for the thread gone missing."""
    if not isinstance(message, dict):
        return
    attachments = message.get("attachments")
    attachments = [a for a in attachments if isinstance(a, dict)] if isinstance(attachments, list) else []
    file_ids = message.get("file_ids") if isinstance(message.get("file_ids"), list) else []
    if not any(well_formed_id(file_id) for file_id in [*file_ids, *(a.get("file_id") for a in attachments)]):
        return
    stored = stored_file_id()
    if file_ids:
        message["file_ids"] = [stored if well_formed_id(file_id) else file_id for file_id in file_ids]
    for attachment in attachments:
        if well_formed_id(attachment.get("file_id")):
            attachment["file_id"] = stored


def vector_store_request(body: dict) -> None:
    """A vector store request's well-formed file ids name one stored file (another is a 404 the schema cannot state),
    a static chunking strategy overlaps by at most half a chunk and a store embeds with the bundled model (the schema
    cannot say either)."""
    stored = None
    files = body.get("files") if isinstance(body.get("files"), list) else []
    for entry in [body, *(f for f in files if isinstance(f, dict))]:
        for key in ("file_ids", "file_id"):
            value = entry.get(key)
            ids = value if isinstance(value, list) else [value]
            if any(well_formed_id(file_id) for file_id in ids):
                stored = stored or stored_file_id()
                entry[key] = [stored if well_formed_id(f) else f for f in value] if isinstance(value, list) else stored
        strategy = entry.get("chunking_strategy")
        static = strategy.get("static") if isinstance(strategy, dict) else None
        size, overlap = (static.get("max_chunk_size_tokens"), static.get("chunk_overlap_tokens")) if isinstance(static, dict) else (None, None)
        if type(size) is int and type(overlap) is int and 100 <= size <= 4096 and overlap >= 0:
            static["chunk_overlap_tokens"] = min(overlap, size // 2)
    model = body.get("embedding_model")
    if isinstance(model, str) and 1 <= len(model) <= 128:
        body["embedding_model"] = BUNDLED_MODEL


def well_formed_id(value) -> bool:
    return isinstance(value, str) and len(value) <= 64 and bool(OBJECT_ID.fullmatch(value))


def bounded(case) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    operation = case.operation.definition.raw.get("operationId")
    if operation == "createChatCompletion":
        bounded_chat(body)
    elif operation == "createCompletion":
        bounded_completion(body)
    elif operation == "createEmbedding":
        bounded_embedding(body)
    elif operation in ("createAnthropicMessage", "countAnthropicMessageTokens"):
        bounded_anthropic(body)
    elif operation == "createResponse":
        bounded_response(body)
        plain_in_flows(case, body)
    elif operation in ("compactResponse", "countResponseInputTokens"):
        bounded_response(body)
    elif operation in ("createConversation", "createConversationItems") and isinstance(body.get("items"), list):
        clipped_items(body["items"])
    elif operation == "createMessage":
        attached_files_stored(body)
    elif operation in ("createVectorStore", "createVectorStoreFile", "createVectorStoreFileBatch"):
        vector_store_request(body)
    elif operation in ("createThread", "modifyThread") and isinstance(body.get("messages"), list):
        for message in body["messages"]:
            attached_files_stored(message)
    url = body.get("source_url")
    if isinstance(url, str) and len(url) <= 4096 and SOURCE_URL.search(url):
        body["source_url"] = urlunsplit(urlsplit(url)._replace(netloc=CLOSED_PORT))
    settings = body.get("settings")
    base_url = settings.get("base_url") if isinstance(settings, dict) else None
    if isinstance(base_url, str) and len(base_url) <= 2048 and BASE_URL.search(base_url):
        settings["base_url"] = UPSTREAM
    key_env = settings.get("api_key_env") if isinstance(settings, dict) else None
    if isinstance(key_env, str) and KEY_ENV.search(key_env):
        settings["api_key_env"] = (KEY_ENV_PREFIX + key_env)[:128]


def bounded_response(body: dict) -> None:
    """A few tokens out, a short input, and the bundled model (any other well-formed id is only a 404), so that
    generated requests reach the responses they create."""
    value = body.get("max_output_tokens")
    if value is None or (type(value) is int and MAX_TOKENS < value <= 131072):
        body["max_output_tokens"] = MAX_TOKENS
    if isinstance(body.get("model"), str) and len(body["model"]) <= 128 and MODEL_ID.fullmatch(body["model"]):
        body["model"] = BUNDLED_MODEL
    for key in ("input", "instructions"):
        if isinstance(body.get(key), str) and len(body[key]) <= 1_000_000:
            body[key] = body[key][:MAX_CHARS]
    if isinstance(body.get("input"), list) and len(body["input"]) <= 1024:
        del body["input"][MAX_MESSAGES:]
        clipped_items(body["input"])


def clipped_items(items: list) -> None:
    """Each text of the items (a message's content or parts, a call's arguments or output) cut to MAX_CHARS where it
    is within its 1,000,000-character limit. Of the texts beyond it (a negative case), the first stays, cut to one
    character too many, and the others are cut short: the body stays invalid, and small enough to get its 400
    rather than the server's 413 for a body over 8 MiB."""
    kept = False

    def clip(text: str) -> str:
        nonlocal kept
        if len(text) <= 1_000_000 or kept:
            return text[:MAX_CHARS]
        kept = True
        return text[:1_000_001]

    for item in items:
        if not isinstance(item, dict):
            continue
        for key in ("content", "output", "arguments"):
            value = item.get(key)
            if isinstance(value, str):
                item[key] = clip(value)
            elif isinstance(value, list):
                for part in value:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        part["text"] = clip(part["text"])


def plain_in_flows(case, body: dict) -> None:
    """In the stateful phase, a schema-valid createResponse without the options whose cross-field rules make most
    generated values a 400 (function tools, function call items, JSON formats) and not streamed, so that its flows
    reach the operations on the response it creates. Positive cases only: what is dropped is optional (a string
    stands in for an input left without messages), so they stay valid."""
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode.is_negative or meta.phase.name != "stateful":
        return
    for key in ("tools", "tool_choice", "text", "stream"):
        body.pop(key, None)
    if body.get("store") is False and not body.get("background"):
        body.pop("store")
    if isinstance(body.get("input"), list):
        body["input"] = [item for item in body["input"] if isinstance(item, dict) and item.get("type", "message") == "message"] or "Hello"


def bounded_chat(body: dict) -> None:
    """A few tokens out, at most the model's n_parallel choices, and a prompt that fits the model's context
    (neither is in the schema)."""
    n = body.get("n")
    if type(n) is int and MAX_CHOICES < n <= 64:
        body["n"] = MAX_CHOICES
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if type(value) is int and MAX_TOKENS < value <= 131072:
            body[key] = MAX_TOKENS
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = MAX_TOKENS
    consistent_tools(body)
    bounded_messages(body, cut_texts)


def bounded_messages(body: dict, bound_parts) -> None:
    """At most MAX_MESSAGES messages, each text cut to MAX_CHARS and each list of parts given to `bound_parts`
    (more messages or a longer text is a negative case: kept)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) > 4096:
        return
    del messages[MAX_MESSAGES:]
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and len(content) <= 1_000_000:
            message["content"] = content[:MAX_CHARS]
        elif isinstance(content, list):
            bound_parts(content)


def cut_texts(parts: list) -> None:
    for part in parts:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            part["text"] = part["text"][:MAX_CHARS]


def consistent_tools(body: dict) -> None:
    """What the schema cannot say about tools (400s for schema-valid bodies otherwise): a named tool_choice
    names a tool of its kind in `tools`, tool_choice comes with tools, tools with a text response_format, a custom
    tool's name is no function's; and generated `parameters` schemas become a plain object, a custom tool's valid
    grammar format plain text (any JSON Schema or definition is schema-valid there, but not every one makes a
    grammar)."""
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) <= 128:  # more is a negative case: keep it
        del tools[MAX_TOOLS:]
    given = {kind: [tool[kind] for tool in tools if isinstance(tool, dict) and isinstance(tool.get(kind), dict)] if isinstance(tools, list) else []
             for kind in ("function", "custom")}
    functions, customs = given["function"], given["custom"]
    for function in functions:
        if isinstance(function.get("parameters"), dict):
            function["parameters"] = {"type": "object"}
    for custom in customs:
        if valid_grammar_format(custom.get("format")):
            custom["format"] = {"type": "text"}
        if isinstance(custom.get("name"), str) and custom["name"] in [function.get("name") for function in functions] and len(custom["name"]) < 64:
            custom["name"] = f"c{custom['name']}"
    for tool in functions + customs:
        description = tool.get("description")
        if isinstance(description, str) and len(description) <= 100000:
            tool["description"] = description[:MAX_CHARS]
    choice = body.get("tool_choice")
    kind = next((key for key in ("function", "custom") if isinstance(choice, dict) and isinstance(choice.get(key), dict)), None)
    valid_choice = choice in ("none", "auto", "required") or kind is not None
    if valid_choice and not tools:
        del body["tool_choice"]
    elif kind and isinstance(choice[kind].get("name"), str) and choice.get("type") == kind:
        named = next((tool["name"] for tool in given[kind] if isinstance(tool.get("name"), str)), None)
        if named:
            choice[kind]["name"] = named
        elif tools:
            body["tool_choice"] = "auto"
    response_format = body.get("response_format")
    if tools and isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        if "tool_choice" not in body or valid_choice:
            body["tool_choice"] = "none"


def valid_grammar_format(form) -> bool:
    if not isinstance(form, dict):
        return False
    grammar = form.get("grammar")
    return (form.keys() == {"type", "grammar"} and form["type"] == "grammar" and isinstance(grammar, dict)
            and isinstance(grammar.get("definition"), str) and len(grammar["definition"]) <= 100000 and grammar.get("syntax") in ("lark", "regex"))


def bounded_completion(body: dict) -> None:
    """A few tokens out of a few short prompts, in the model's vocabulary; no `suffix` (the bundled model has no
    FIM tokens), `best_of` and `n` as the server takes them (a valid body may ask for what this model cannot do)."""
    value = body.get("max_tokens")
    if value is None or (type(value) is int and MAX_TOKENS < value <= 131072):
        body["max_tokens"] = MAX_TOKENS
    suffix = body.get("suffix")
    if suffix is None or (isinstance(suffix, str) and len(suffix) <= 1_000_000):  # else a negative case: keep it
        body.pop("suffix", None)
    n = body.get("n")
    if type(n) is int and 2 < n <= 128:
        body["n"] = 2
    if type(body.get("best_of")) is int and 1 <= body["best_of"] <= 20:
        body["best_of"] = body.get("n") if type(body.get("n")) is int else 1
    if body.get("echo") is True and type(body.get("logprobs")) is int and 0 <= body["logprobs"] <= 5:
        del body["logprobs"]  # together a 400 (the prompt is not scored), which the schema cannot say
    if "prompt" in body:
        body["prompt"] = bounded_prompts(body["prompt"], max_items=32)


def bounded_embedding(body: dict) -> None:
    """A few short inputs in the model's vocabulary, and only its own `dimensions`."""
    if type(body.get("dimensions")) is int and 1 <= body["dimensions"] <= 1048576:
        body["dimensions"] = DIMENSIONS
    if "input" in body:
        body["input"] = bounded_prompts(body["input"], max_items=2048)


def bounded_prompts(value, max_items: int):
    """A prompt or input (a string, token ids, or a list of either, at most `max_items` of them) cut short, its
    token ids kept in the vocabulary; a value outside the schema (a negative case) stays outside it."""
    if isinstance(value, str) and len(value) <= 1_000_000:
        return value[:MAX_CHARS] or value
    if not isinstance(value, list) or not value or len(value) > 131072:
        return value
    if all(type(token) is int and 0 <= token < 2**31 for token in value):
        return [token % VOCABULARY for token in value[:MAX_PROMPT_TOKENS]]
    if len(value) <= max_items and all(isinstance(item, (str, list)) for item in value):
        return [bounded_prompts(item, max_items) for item in value[:MAX_PROMPTS]]
    return value


def bounded_anthropic(body: dict) -> None:
    """A Messages request kept cheap like a chat request, with what the schema takes but the server refuses by
    design (image and document blocks: the model reads text only) turned into text blocks, a named tool_choice
    naming one of the tools, and structured output's schema cheap (left out beside tools)."""
    value = body.get("max_tokens")
    if type(value) is int and MAX_TOKENS < value <= 1048576:
        body["max_tokens"] = MAX_TOKENS
    if isinstance(body.get("system"), str) and len(body["system"]) <= 1_000_000:
        body["system"] = body["system"][:MAX_CHARS]
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) <= 128:
        del tools[MAX_TOOLS:]
        for tool in tools:
            if isinstance(tool, dict) and isinstance(tool.get("input_schema"), dict):
                tool["input_schema"] = {"type": "object"}
            if isinstance(tool, dict) and isinstance(tool.get("description"), str) and len(tool["description"]) <= 100000:
                tool["description"] = tool["description"][:MAX_CHARS]
    config = body.get("output_config")
    if isinstance(config, dict) and isinstance(config.get("format"), dict):
        if tools:  # structured output with tool calls is a 400 by design
            del config["format"]
        elif isinstance(config["format"].get("schema"), dict):
            config["format"]["schema"] = {"type": "object"}
    names = [tool.get("name") for tool in tools if isinstance(tool, dict)] if isinstance(tools, list) else []
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool" and names and isinstance(names[0], str) and choice.get("name") not in names:
        choice["name"] = names[0]
    bounded_messages(body, text_only)


def text_only(blocks: list) -> None:
    """Each block the server refuses (the schema's UnsupportedBlockParam) made a text block; texts cut to MAX_CHARS."""
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("type"), str) and block["type"] in UNSUPPORTED_BLOCKS:
            blocks[index] = block = {"type": "text", "text": "x"}
        if isinstance(block.get("text"), str) and len(block["text"]) <= 1_000_000:
            block["text"] = block["text"][:MAX_CHARS]
        if isinstance(block.get("content"), list):
            text_only(block["content"])
        elif isinstance(block.get("content"), str) and len(block["content"]) <= 1_000_000:
            block["content"] = block["content"][:MAX_CHARS]
