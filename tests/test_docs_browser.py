"""The /docs console in a real headless Chromium, on a fresh data dir: every operation rendered, the filter, "Try it
out" with the ids the console carries from one call to the next, and nothing leaves the host."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import pytest
from playwright import sync_api

from tests.live_server import LiveServer
from tests.test_spec import ADDED_OPERATIONS, SEED_OPERATIONS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
OPERATION_COUNT = len(SEED_OPERATIONS) + len(ADDED_OPERATIONS)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> LiveServer:
    """A server of its own, on a fresh data dir: the console starts with no thread, message or assistant."""
    with LiveServer(tmp_path_factory.mktemp("docs") / "data") as live:
        yield live


@pytest.fixture(scope="module")
def spec(server) -> dict:
    return httpx.get(f"{server.api_url}/openapi.json", timeout=30).json()


@contextmanager
def opened_console(server: LiveServer):
    """The /docs page, fully rendered, and the list of every URL the page requested."""
    requested: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{server.base_url}/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        yield page, requested
        browser.close()


@pytest.fixture(scope="module")
def console(server):
    with opened_console(server) as opened:
        yield opened


def try_it_out(page, operation_id: str):
    """Expand an operation (unless it is open) and switch it to "Try it out" (unless it is in that mode)."""
    block = page.locator(f"[id$='-{operation_id}']").first
    if "is-open" not in block.get_attribute("class").split():
        block.locator(".opblock-summary").first.click()
    button = block.locator("button.try-out__btn", has_text="Try it out")
    if button.count():
        button.click()
    return block


def execute(block) -> str:
    """Press "Execute" and return the status code the console shows."""
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table .response .response-col_status").first
    status.wait_for(timeout=60_000)  # generous: the machine is shared, and a first chat loads the model
    return status.inner_text().strip()


def response_body(block) -> dict:
    return json.loads(block.locator(".live-responses-table .response .highlight-code pre").first.inner_text())


def path_input(block, name: str):
    return block.locator(f"tr[data-param-name='{name}'][data-param-in='path'] input").first


def listed_operations(within) -> list[str]:
    """The operationIds of the operations shown, in the console's order (an opblock's id ends with its operationId)."""
    return [element.get_attribute("id").rsplit("-", 1)[-1] for element in within.locator(".opblock").all()]


def test_every_operation_is_rendered(console):
    page, _ = console
    assert page.locator(".opblock").count() == OPERATION_COUNT
    assert not page.locator(".errors-wrapper").count(), page.locator(".errors-wrapper").inner_text()
    page.screenshot(path="/tmp/docs.png", full_page=False)


#: What clicking down the page cannot run offline: downloadModel's example needs the internet (its description says
#: so), and deleteModel's deletes that download.
NEEDS_THE_INTERNET = {"downloadModel", "deleteModel"}


def test_clicking_down_the_page_runs_every_first_example(console):
    """From the fresh data dir, each operation in the order the console lists them, as the console fills it in."""
    page, _ = console
    listed = listed_operations(page)
    assert len(listed) == OPERATION_COUNT
    for operation_id in listed:
        if operation_id in NEEDS_THE_INTERNET:
            continue
        block = try_it_out(page, operation_id)
        pick_a_file(block)
        status = execute(block)
        assert status.startswith("2"), f"{operation_id}: {status} {block.locator('.live-responses-table').first.inner_text()[:500]}"
        block.locator(".opblock-summary").first.click()  # close it again, as a user moving on would


def pick_a_file(block) -> None:
    """In an upload's form, pick a file, as a user would (a form without one is left as it is)."""
    for picker in block.locator("input[type=file]").all():
        picker.set_input_files({"name": "notes.md", "mimeType": "text/markdown", "buffer": b"# Notes\n\nHello, files.\n"})


def choose_example(block, name: str, other: str) -> None:
    """Choose another example, then `name`: the console fills it in anew, with the ids of now (the body an
    earlier run left may name a file since deleted)."""
    examples = block.locator("select.examples-select-element").first
    examples.select_option(other)
    examples.select_option(name)


def upload_a_file(page) -> str:
    """createFile from the console; the new file's id."""
    block = try_it_out(page, "createFile")
    pick_a_file(block)
    assert execute(block).startswith("2")
    return response_body(block)["id"]


def test_try_it_out_list_models(console):
    page, _ = console
    assert execute(try_it_out(page, "listModels")).startswith("2")


def test_try_it_out_create_thread_with_its_example(console):
    page, _ = console
    file_id = upload_a_file(page)
    block = try_it_out(page, "createThread")
    choose_example(block, "withMessages", "empty")
    example = block.locator("textarea.body-param__text").first.input_value()
    assert "Hello, what is AI?" in example and file_id in example  # the example's file: the one just uploaded
    assert execute(block).startswith("2")
    assert "thread_" in block.locator(".live-responses-table .response .highlight-code").first.inner_text()


def test_no_request_leaves_the_host(console, server):
    page, requested = console
    page.wait_for_load_state("networkidle")
    host = urlsplit(server.base_url).hostname
    remote = [url for url in requested if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname != host]
    assert requested and not remote


def test_tags_come_in_the_order_a_user_meets_them(console, spec):
    page, _ = console
    sections = [text.split("\n")[0] for text in page.locator(".opblock-tag-section .opblock-tag").all_inner_texts()]
    assert sections == ["Chat", "Models", "Files", "Threads", "Messages", "Assistants", "Completions", "Embeddings", "Responses", "Conversations", "Vector stores", "Anthropic Messages", "Monitoring", "Clean up"]
    assert [tag["name"] for tag in spec["tags"]] == sections[:-1] and all(tag["description"] for tag in spec["tags"])
    deletes = listed_operations(page.locator(".opblock-tag-section").last)
    assert deletes == ["deleteVectorStoreFile", "deleteVectorStore", "deleteConversationItem", "deleteConversation", "deleteResponse",  # what the sections made, last
                       "deleteAssistant", "deleteMessage", "deleteThread", "deleteFile", "deleteModel"]


def test_schemas_are_shown_by_name(console):
    page, _ = console
    names = set(page.locator(".models .model-container").evaluate_all("els => els.map(e => e.getAttribute('data-name'))"))
    assert {"Thread", "ThreadMessage", "Assistant", "Model", "ChatCompletion", "ListThreadsResponse", "ErrorResponse"} <= names


def test_filter_shows_only_the_operations_of_a_tag(console, spec):
    page, _ = console
    messages = {op["operationId"] for item in spec["paths"].values() for op in item.values()  # "Anthropic Messages" too
                if isinstance(op, dict) and any("messages" in tag.lower() for tag in op.get("tags", []))}
    page.locator("input.operation-filter-input").fill("messages")
    page.wait_for_function(f"document.querySelectorAll('.opblock').length === {len(messages)}", timeout=30_000)
    assert set(listed_operations(page)) == messages
    page.screenshot(path="/tmp/docs-filtered.png", full_page=False)
    page.locator("input.operation-filter-input").fill("")
    page.wait_for_function(f"document.querySelectorAll('.opblock').length === {OPERATION_COUNT}", timeout=30_000)


def test_ids_carry_from_one_call_to_the_next(console):
    """createFile, createThread, then getThread, createMessage and listMessages run with the ids the console filled
    in (the file's in the bodies' examples), and retrieveMessageFile with the message's and the file's."""
    page, _ = console
    file_id = upload_a_file(page)
    created = try_it_out(page, "createThread")
    assert execute(created).startswith("2")
    thread_id = response_body(created)["id"]
    for operation_id in ("getThread", "createMessage", "listMessages"):
        block = try_it_out(page, operation_id)
        if operation_id == "createMessage":
            choose_example(block, "text", "parts")
        assert path_input(block, "thread_id").input_value() == thread_id, operation_id  # filled in, not typed
        assert execute(block).startswith("2"), operation_id
    message_id = response_body(page.locator("[id$='-createMessage']").first)["id"]
    listed = [m["id"] for m in response_body(page.locator("[id$='-listMessages']").first)["data"]]
    assert listed[0] == message_id and len(listed) > 1  # newest first; createThread's example added the others
    retrieve = try_it_out(page, "retrieveMessage")
    assert path_input(retrieve, "message_id").input_value() == message_id
    offered = {name: retrieve.locator(f"tr[data-param-name='{name}'] + tr.jan-ids button.jan-ids__id").all_inner_texts()
               for name in ("thread_id", "message_id")}
    assert offered["thread_id"][0] == thread_id and offered["message_id"][0] == message_id  # the most recent first
    assert set(listed) <= set(offered["message_id"])  # the others a click away
    retrieve.scroll_into_view_if_needed()
    page.screenshot(path="/tmp/docs-ids.png", full_page=False)
    assert execute(retrieve).startswith("2")
    assert response_body(page.locator("[id$='-createMessage']").first)["file_ids"] == [file_id]
    attached = try_it_out(page, "retrieveMessageFile")
    assert path_input(attached, "file_id").input_value() == file_id
    assert execute(attached).startswith("2")
