"""OpenAI (legacy) completions: request -> raw prompts and engine parameters, and the jobs' output ->
`text_completion` objects, whole or as a Server-Sent Events stream of `text_completion` chunks.

Each prompt is a group of `n` choices that share one prefill (Runner.submit_choices); choice `i * n + j` is
prompt i's j-th, as OpenAI orders them. Every group decodes in parallel with the others; a streamed response
interleaves the chunks of all choices as they come, each with its `index`. The spec has already validated types
and ranges; this module refuses what is left.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from typing import Iterator

from jan_server.errors import ApiError, InvalidRequestError
from jan_server.models import jobs
from jan_server.models import raw_prompt
from jan_server.models.batching import Job, Runner
from jan_server.models.jobs import TokenLogprob
from jan_server.web import sse
from jan_server.web.chat import DONE

#: OpenAI's default `max_tokens` for completions.
DEFAULT_MAX_TOKENS = 16

#: The jobs of one request: one group of `n` choices per prompt.
Groups = list[list[Job]]


def prompts_of(body: dict) -> list[raw_prompt.Prompt]:
    return raw_prompt.listed(body["prompt"])


def parameters_of(body: dict) -> dict:
    """The generation parameters given (the model's defaults fill the rest), `max_tokens` defaulting as on OpenAI."""
    given = {name: body.get(name) for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "stop")}
    given["max_tokens"] = body.get("max_tokens") or DEFAULT_MAX_TOKENS
    given["logprobs"] = body.get("logprobs")
    given["route"] = jobs.route("key", body.get("prompt_cache_key"))
    return {name: value for name, value in given.items() if value is not None}


def choices_per_prompt(body: dict) -> int:
    """`n`; `best_of` may only repeat it (the server does not generate extra completions to rank)."""
    n = body.get("n") or 1
    if body.get("best_of") not in (None, 1, n):
        raise InvalidRequestError(
            "best_of is not supported (the server does not rank completions): leave it out, or make it equal to n.",
            param="best_of",
            code="unsupported_parameter",
        )
    return n


def start(runner: Runner, body: dict, cancelled: threading.Event) -> Groups:
    """Tokenize every prompt, then submit each as a group of `n` choices; if one is refused (more than
    n_parallel: 400, a full queue: 429), the groups already submitted are cancelled."""
    n = choices_per_prompt(body)
    if body.get("echo") and body.get("logprobs") is not None:
        raise InvalidRequestError("logprobs with echo is not supported: the prompt's tokens are not scored.", param="echo", code="unsupported_parameter")
    prepared = [runner.prepare_text(prompt, parameters_of(body), suffix=body.get("suffix")) for prompt in prompts_of(body)]
    groups: Groups = []
    for job in prepared:
        job.cancelled = cancelled  # the scheduler stops the choices once it is set (their client is gone)
        try:
            groups.append(runner.submit_choices(job, n))
        except ApiError:
            cancel(groups)
            raise
    return groups


def cancel(groups: Groups) -> None:
    for group in groups:
        for job in group:
            job.cancel()


def echoes(runner: Runner, body: dict) -> list[str]:
    """Each prompt's text, to put before its choices (`echo`), or empty strings."""
    if not body.get("echo"):
        return [""] * len(prompts_of(body))
    return [prompt if isinstance(prompt, str) else runner.detokenize(prompt) for prompt in prompts_of(body)]


def usage(groups: Groups) -> dict:
    """Each prompt counted once, every choice's completion tokens (jan_server.models.jobs.usage, summed)."""
    counts = [jobs.usage(group) for group in groups]
    total = {key: sum(count[key] for count in counts) for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return {**total, "prompt_tokens_details": {"cached_tokens": sum(count["prompt_tokens_details"]["cached_tokens"] for count in counts)}}


def logprobs_block(job: Job, entries: list[TokenLogprob], offset: int) -> dict | None:
    """OpenAI's legacy logprobs of a choice's `entries`, whose text starts at `offset` in the choice's text."""
    if job.sampling.logprobs is None:
        return None
    tokens = [entry.token.decode("utf-8", errors="replace") for entry in entries]
    offsets = [offset + sum(map(len, tokens[:index])) for index in range(len(tokens))]
    return {
        "tokens": tokens,
        "token_logprobs": [entry.logprob for entry in entries],
        "top_logprobs": [{token.decode("utf-8", errors="replace"): logprob for token, logprob in entry.top} for entry in entries],
        "text_offset": offsets,
    }


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def completion(groups: Groups, echoed: list[str], model: str) -> dict:
    """The `text_completion` object, once every choice has finished (the groups run in parallel meanwhile)."""
    try:
        texts = [[echo + text for text in jobs.results(group)] for echo, group in zip(echoed, groups)]
    except ApiError:
        cancel(groups)
        raise
    flat = [(text, job) for group_texts, group in zip(texts, groups) for text, job in zip(group_texts, group)]
    return {
        "id": completion_id(),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": index, "text": text, "logprobs": logprobs_block(job, job.logprobs, 0), "finish_reason": job.finish_reason}
            for index, (text, job) in enumerate(flat)
        ],
        "usage": usage(groups),
    }


def stream(groups: Groups, echoed: list[str], model: str, include_usage: bool = False) -> Iterator[bytes]:
    """The SSE body: each choice's echo, then the choices' text chunks as they come, a chunk with each one's
    finish_reason as its group ends, optional usage (empty `choices`), [DONE]. A failure ends the stream with an
    `error` event (the handler cancels the other choices when the stream ends)."""
    head = {"id": completion_id(), "object": "text_completion", "created": int(time.time()), "model": model}
    if include_usage:
        head["usage"] = None
    n = len(groups[0])
    sent = {}  # choice index -> (logprobs entries sent, length of their tokens' text)

    def chunk(index: int, text: str, finish_reason: str | None = None) -> bytes:
        job = groups[index // n][index % n]
        entries, offset = sent.get(index, (0, 0))
        logprobs = logprobs_block(job, job.logprobs[entries:], offset)
        sent[index] = (len(job.logprobs), offset + (sum(map(len, logprobs["tokens"])) if logprobs else 0))
        return sse.event({**head, "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]})

    for prompt, echo in enumerate(echoed):
        for j in range(n if echo else 0):
            yield chunk(prompt * n + j, echo)
    for prompt, index, text in interleaved(groups):
        if isinstance(text, ApiError):
            yield sse.event(text.to_dict(), "error")
            yield DONE
            return
        if text is not None:
            yield chunk(prompt * n + index, text)
            continue
        job = groups[prompt][index]
        if job.finish_reason is None:  # cancelled: the client is gone
            return
        yield chunk(prompt * n + index, "", job.finish_reason)
    if include_usage:
        yield sse.event({**head, "choices": [], "usage": usage(groups)})
    yield DONE


def interleaved(groups: Groups) -> Iterator[tuple[int, int, str | ApiError | None]]:
    """(prompt, choice, text) as the text comes, (prompt, choice, None) for each choice once its group ended,
    (prompt, 0, ApiError) if a group failed, from every group at once: a thread per group reads it
    (jan_server.models.jobs.choices, with its liveness check) into one queue. Ends once every group ended."""
    merged: queue.SimpleQueue = queue.SimpleQueue()

    def read(prompt: int, group: list[Job]) -> None:
        try:
            for index, text in jobs.choices(group):
                merged.put((prompt, index, text))
        except ApiError as exc:
            merged.put((prompt, 0, exc))
        for index in range(len(group)):
            merged.put((prompt, index, None))

    for prompt, group in enumerate(groups):
        threading.Thread(target=read, args=(prompt, group), name=f"completion-prompt-{prompt}", daemon=True).start()
    remaining = sum(map(len, groups))
    while remaining:
        item = merged.get()
        remaining -= item[2] is None
        yield item
