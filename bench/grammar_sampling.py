"""Grammar-constrained sampling with Claude Code's tool set, two ways in one run, on the bundled model:

- a forced tool call (`tool_choice: any`), greedy: tokens/s when the grammar filters the whole vocabulary at every
  token (the grammar inside the chain, as llama_cpp.Llama builds it and jan-server did) and when it checks the
  chain's pick only (jan_server.models.sampler), alternating; both must write the same call;
- free text under `auto` (a lazy grammar waiting for `<tool_call>`): the cost per token of waiting, over the first
  --text-tokens tokens of a text, with llama.cpp's own lazy grammar (its former `[\\s\\S]*?(<tool_call>)[\\s\\S]*`
  pattern, searched again over all the text after every token) and with the sampler's scan of the last bytes.

Claude Code's tools and prompt are read from the real CLI (the one tests/npm pins): it is started
once against a listener on 127.0.0.1 that records its requests and refuses them, and the request with the most
tools is rendered as jan-server renders it. The prompt (about 20,000 tokens; `--prompt short`: one question, for a
loaded machine) is read once; each round then decodes from its end.

    python bench/grammar_sampling.py [--rounds 3] [--prompt short] [--tokens 48] [--text-tokens 600]
"""

from __future__ import annotations

import argparse
import ctypes
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jan_server.models import tools  # noqa: E402
from jan_server.models.jobs import Sampling  # noqa: E402
from jan_server.models.prompt import PromptFormatter  # noqa: E402
from jan_server.models.registry import bundled_weights  # noqa: E402
from jan_server.models.sampler import Sampler  # noqa: E402
from jan_server.web import anthropic  # noqa: E402
from tests.claude_cli import CLAUDE, claude_env  # noqa: E402

OLD_PATTERN = r"[\s\S]*?(<tool_call>)[\s\S]*"


def claude_code_request(claude: str) -> dict:
    """The request with the most tools among those the CLI sends for `claude -p "Reply with the word hello."`."""
    seen: list[dict] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            body = json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": "recorded"}}).encode()
            self.send_response(400)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "home").mkdir()
            env = claude_env(Path(tmp) / "home", f"http://127.0.0.1:{listener.server_address[1]}", None)
            subprocess.run([claude, "-p", "Reply with the word hello.", "--model", "local"], cwd=tmp, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    finally:
        listener.shutdown()
    if not seen:
        raise SystemExit("the CLI sent no request")
    return max(seen, key=lambda request: len(request.get("tools") or ()))


def old_sampler(vocab, n_vocab: int, sampling: Sampling, lazy_pattern: str | None = None):
    """The chain with the grammar inside it, before the greedy pick (jan-server's sampler before this script)."""
    from llama_cpp._internals import LlamaSampler
    from llama_cpp.llama_grammar import LlamaGrammar
    import llama_cpp

    old = LlamaSampler()
    old.add_penalties(n_vocab, 64, 1.0, 0.0, 0.0)
    grammar = LlamaGrammar.from_string(sampling.grammar, verbose=False)
    text, root = grammar._grammar.encode(), grammar._root.encode()
    if lazy_pattern:
        patterns = (ctypes.c_char_p * 1)(lazy_pattern.encode())
        stage = llama_cpp.llama_sampler_init_grammar_lazy_patterns(vocab, text, root, patterns, 1, None, 0)
    else:
        stage = llama_cpp.llama_sampler_init_grammar(vocab, text, root)
    llama_cpp.llama_sampler_chain_add(old.sampler, stage)
    old.add_greedy()
    return old


class OldWay:
    """The old chain behind Sampler's two calls."""

    def __init__(self, chain, n_vocab: int):
        from llama_cpp._internals import LlamaTokenDataArray

        self.chain, self.candidates = chain, LlamaTokenDataArray(n_vocab=n_vocab)

    def sample(self, logits) -> int:
        import llama_cpp

        self.candidates.copy_logits(logits)
        llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(self.candidates.candidates))
        token = int(self.candidates.candidates_data.id[self.candidates.candidates.selected])
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_accept(self.chain.sampler, token)

    def close(self) -> None:
        self.chain.close()


def forced_call(llama, prompt: list[int], sampler, limit: int) -> tuple[list[int], float, float]:
    """(tokens, seconds in all, seconds sampling) of a greedy call from the prompt's end."""
    llama.n_tokens = len(prompt)  # the prompt's cells stay; eval drops the rest
    out, sampling, began = [], 0.0, time.perf_counter()
    while len(out) < limit:
        start = time.perf_counter()
        token = sampler.sample(llama.scores[llama.n_tokens - 1])
        sampling += time.perf_counter() - start
        out.append(token)
        if llama.token_eos() == token:
            break
        llama.eval([token])
    return out, time.perf_counter() - began, sampling


def waiting(sampler, text: list[int]) -> float:
    """Seconds a lazy grammar's sampler takes to accept the tokens of a text that never writes its word."""
    start = time.perf_counter()
    for token in text:
        sampler.accept(token)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claude", default=str(CLAUDE))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48, help="tokens of the forced call")
    parser.add_argument("--text-tokens", type=int, default=600, help="tokens of free text under a waiting lazy grammar")
    parser.add_argument("--prompt", choices=["claude", "short"], default="claude",
                        help="Claude Code's own prompt (its tools listed, ~20,000 tokens), or one short question (the same grammar)")
    args = parser.parse_args()
    import llama_cpp

    request = claude_code_request(args.claude)
    body = anthropic.chat_body({**request, "model": "local", "tool_choice": {"type": "any"}})
    plan = tools.plan(body["tools"], body["tool_choice"], body["parallel_tool_calls"])
    threads = os.cpu_count()
    probe = llama_cpp.Llama(str(bundled_weights()), vocab_only=True, verbose=False)
    messages = body["messages"] if args.prompt == "claude" else [{"role": "user", "content": "List the files in this folder."}]
    prompt = PromptFormatter(probe._model, 1 << 20).format(messages, body["tools"] if args.prompt == "claude" else None)
    tokens = probe.tokenize(prompt.text.encode(), add_bos=prompt.add_bos, special=True)
    llama = llama_cpp.Llama(str(bundled_weights()), n_ctx=len(tokens) + args.tokens + 16, n_batch=512, n_threads=threads,
                            n_threads_batch=threads, verbose=False)
    vocab, n_vocab = llama._model.vocab, llama.n_vocab()
    piece = lambda token: llama._model.token_to_piece(token).rstrip(b"\0")  # noqa: E731
    print(f"Claude Code {len(request['tools'])} tools, grammar {len(plan.grammar):,} characters, prompt {len(tokens):,} tokens")
    start = time.perf_counter()
    llama.eval(tokens)
    print(f"prompt read in {time.perf_counter() - start:.0f} s")

    forced = Sampling.from_parameters({"temperature": 0, **plan.parameters()})
    ways = {"grammar in the chain": lambda: OldWay(old_sampler(vocab, n_vocab, forced), n_vocab),
            "check the pick": lambda: Sampler(vocab, n_vocab, forced, piece)}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    shares: dict[str, list[float]] = {name: [] for name in ways}
    written = {}
    for _ in range(args.rounds):
        for name, make in ways.items():
            sampler = make()
            try:
                out, seconds, sampling = forced_call(llama, tokens, sampler, args.tokens)
            finally:
                sampler.close()
            written.setdefault(name, out)
            if out != written[name]:
                raise SystemExit(f"{name} wrote a different call in a later round")
            rates[name].append(len(out) / seconds)
            shares[name].append(sampling / len(out) * 1000)
    first, second = written.values()
    if first != second:
        raise SystemExit(f"the two ways wrote different calls:\n{llama.detokenize(first)!r}\n{llama.detokenize(second)!r}")
    print(f"\nforced call ({len(first)} tokens, the same both ways): {llama.detokenize(first).decode(errors='replace')!r}")
    print("| sampler | tokens/s (median) | best | sampling ms/token (median) |\n|---|---:|---:|---:|")
    for name in ways:
        print(f"| {name} | {statistics.median(rates[name]):.1f} | {max(rates[name]):.1f} | {statistics.median(shares[name]):.1f} |")
    old_rate, new_rate = (statistics.median(rates[name]) for name in ways)
    print(f"check the pick / grammar in the chain: {new_rate / old_rate:.2f}x")

    lazy = Sampling.from_parameters({"temperature": 0, **tools.plan(body["tools"]).parameters()})
    text = llama.tokenize(b" The user's question is about the files in this folder." * (args.text_tokens // 10 + 1), add_bos=False)[:args.text_tokens]
    print(f"\nfree text under `auto`, {len(text)} tokens before any <tool_call>:")
    print("| lazy grammar | ms/token over the text | ms/token, last tenth |\n|---|---:|---:|")
    for name, make in (("llama.cpp's, old pattern", lambda: OldWay(old_sampler(vocab, n_vocab, lazy, OLD_PATTERN), n_vocab)),
                       ("scan of the last bytes", lambda: Sampler(vocab, n_vocab, lazy, piece))):
        sampler = make()
        try:
            head = waiting(sampler, text[: len(text) * 9 // 10])
            tail = waiting(sampler, text[len(text) * 9 // 10:])
        finally:
            sampler.close()
        print(f"| {name} | {(head + tail) / len(text) * 1000:.2f} | {tail / (len(text) - len(text) * 9 // 10) * 1000:.2f} |")
    print(f"\nload average (1, 5, 15 min): {', '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
