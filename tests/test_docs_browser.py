"""The /docs console in a real headless Chromium: every operation rendered, "Try it out" works, nothing leaves the host."""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

import pytest
from playwright import sync_api

from tests.test_spec import ADDED_OPERATIONS, SEED_OPERATIONS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
OPERATION_COUNT = len(SEED_OPERATIONS) + len(ADDED_OPERATIONS)


@pytest.fixture(scope="module")
def console(server):
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


def try_it_out(page, operation_id: str):
    """Expand an operation and switch it to "Try it out" (the console may already start in that mode)."""
    block = page.locator(f"[id$='-{operation_id}']").first
    block.locator(".opblock-summary").first.click()
    button = block.locator("button.try-out__btn", has_text="Try it out")
    if button.count():
        button.click()
    return block


def execute(block) -> str:
    """Press "Execute" and return the status code the console shows."""
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table .response .response-col_status").first
    status.wait_for(timeout=60_000)
    return status.inner_text().strip()


def test_every_operation_is_rendered(console):
    page, _ = console
    assert page.locator(".opblock").count() == OPERATION_COUNT
    assert not page.locator(".errors-wrapper").count(), page.locator(".errors-wrapper").inner_text()
    page.screenshot(path="/tmp/docs.png", full_page=False)


def test_try_it_out_list_models(console):
    page, _ = console
    assert execute(try_it_out(page, "listModels")).startswith("2")


def test_try_it_out_create_thread_with_its_example(console):
    page, _ = console
    block = try_it_out(page, "createThread")
    assert "Hello, what is AI?" in block.locator("textarea.body-param__text").first.input_value()
    assert execute(block).startswith("2")
    assert "thread_" in block.locator(".live-responses-table .response .highlight-code").first.inner_text()


def test_no_request_leaves_the_host(console, server):
    page, requested = console
    page.wait_for_load_state("networkidle")
    host = urlsplit(server.base_url).hostname
    remote = [url for url in requested if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname != host]
    assert requested and not remote
