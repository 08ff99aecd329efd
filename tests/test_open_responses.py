"""The Open Responses compliance suite (vendored in tests/npm/openresponses, run by npm's `bun`) against the real
server and bundled model, one suite test at a time (they run at once otherwise, and the bundled model on a small
machine cannot answer them all within the suite's 30 s per WebSocket turn). 15 of its 17 tests pass. `image-input`
needs a vision model and gets a 400 saying that the model reads text only; `tool-calling` needs a model that chooses
to call a tool (see NOT_PASSING)."""

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.live_server import PATIENT, LiveServer

NPM = Path(__file__).parent / "npm"
BUN = NPM / "node_modules" / ".bin" / "bun"
MODEL = "smollm2-135m-instruct"
PASSING = [
    "basic-response", "assistant-phase", "response-output-phase-schema", "streaming-response", "system-prompt", "multi-turn",
    "compact-response", "compact-missing-model", "websocket-response", "websocket-sequential-responses", "websocket-continuation",
    "websocket-reconnect-store-false-recovery", "websocket-previous-response-not-found", "websocket-failed-continuation-evicts-cache",
    "websocket-compact-new-chain",
]
#: `tool-calling` asks for a call with tool_choice `auto`: the model's choice. The bundled 135M model was not trained
#: for tools and does not choose: its reply starts a call (`<`) with probability 0.04 whether a tool fits the question
#: or not (the weather with get_weather; "Reply with the word hello." with a shell tool), 0 of 12 sampled replies
#: called, and asked whether a tool is needed it answers "no" to every question. Only forcing a call would pass it,
#: which `auto` does not mean (Codex sends `auto`, and would then run whatever shell commands the model wrote).
NOT_PASSING = ["image-input", "tool-calling"]


@pytest.fixture(scope="module")
def suite_server(tmp_path_factory):
    """A server of its own whose model has a 1,024-token context: the suite sets no max_output_tokens, and an
    answer bounded by that context ends well inside the suite's 30 s per WebSocket turn (2,048 did not, once)."""
    with LiveServer(tmp_path_factory.mktemp("open-responses") / "data") as server:
        httpx.put(f"{server.api_url}/models/{MODEL}/start", json={"ctx_len": 1024}, timeout=PATIENT).raise_for_status()
        yield server


def run_suite(api_url: str, test_id: str) -> dict:
    assert BUN.exists(), "the suite's runtime is missing: run `npm ci --prefix tests/npm` (as .ci/run does)"
    command = [str(BUN), "run", "openresponses/bin/compliance-test.ts", "--json", "--base-url", api_url, "--api-key", "x", "--model", MODEL, "--filter", test_id]
    run = subprocess.run(command, cwd=NPM, capture_output=True, text=True, timeout=900)  # a guard against a hang only
    assert run.stdout.strip(), run.stderr
    [result] = json.loads(run.stdout)["results"]
    return result


def test_the_suite_has_these_tests():
    suite = (NPM / "openresponses" / "src" / "lib" / "compliance-tests.ts").read_text()
    assert sorted(PASSING + NOT_PASSING) == sorted(line.split('"')[1] for line in suite.splitlines() if line.startswith('    id: "'))
    assert (len(PASSING), len(NOT_PASSING)) == (15, 2)


@pytest.mark.parametrize("test_id", PASSING)
def test_open_responses_compliance(suite_server, test_id):
    result = run_suite(suite_server.api_url, test_id)
    assert result["status"] == "passed", result.get("errors")


def test_an_image_is_refused_clearly(suite_server):
    result = run_suite(suite_server.api_url, "image-input")
    assert result["errors"] == ["HTTP 400: [object Object]"]
    assert result["response"]["error"]["param"] == "input[0].content[1]"
    assert f"The model '{MODEL}' cannot read images" in result["response"]["error"]["message"]
