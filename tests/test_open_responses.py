"""The Open Responses compliance suite (vendored in tests/npm/openresponses, run by npm's `bun`) against the real
server and the bundled weights, one suite test at a time (they run at once otherwise, and the bundled model on a
small machine cannot answer them all within the suite's 30 s per WebSocket turn). 15 of its 17 tests pass.
`image-input` needs a vision model and gets a 400 saying that the model reads text only; `tool-calling` needs a
model that chooses to call a tool (see NOT_PASSING)."""

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.live_server import PATIENT, LiveServer, bundled_copy

NPM = Path(__file__).parent / "npm"
BUN = NPM / "node_modules" / ".bin" / "bun"
#: The suite's model: the bundled weights in a model folder of their own, whose model.json (Jan's format) sets what the
#: suite leaves to the model (it sends no temperature nor max_output_tokens). Sampled (the bundled model's 0.7, in a
#: 1,024-token context), 3 of 20 runs of websocket-continuation and websocket-compact-new-chain failed: an answer
#: rambled to the end of the context and the turn was `incomplete` where the suite expects `completed`. A first turn
#: that fills the context leaves its continuation no room: a `context_length_exceeded` error event, which the suite
#: reports as "(root): Expected object, received null" (CI's failure; a 64-token context shows it every run).
#: Greedy, a warm cache changed an answer once in 10 runs; a seed on a deterministic model makes each job a cold
#: read's text whatever the cache holds (one sequence: each has its own cells then), so each prompt gets the same
#: answer every run. Greedy alone, the answers to "Count from 1 to 3." ("1. 1. 1. …") and "… to 5." ran to the bound:
#: a frequency penalty ends them. 256 tokens bound an answer well inside the context and the suite's 30 s a turn.
MODEL = "smollm2-135m-suite"
MODEL_JSON = {
    "name": "SmolLM2 135M Instruct, answering the same every run",
    "settings": {"deterministic": True, "n_parallel": 1},
    "parameters": {"temperature": 0, "frequency_penalty": 0.5, "seed": 0, "max_tokens": 256},
}
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
    """A server of its own with MODEL started."""
    data_dir = tmp_path_factory.mktemp("open-responses") / "data"
    bundled_copy(data_dir, MODEL, MODEL_JSON)
    with LiveServer(data_dir) as server:
        httpx.put(f"{server.api_url}/models/{MODEL}/start", timeout=PATIENT).raise_for_status()
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
