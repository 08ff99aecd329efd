"""OpenAI (legacy) completions: request -> raw prompts and engine parameters, and the jobs' output ->
`text_completion` objects, whole or as a Server-Sent Events stream of `text_completion` chunks.

One choice per prompt and `n`: choice `i * n + j` is prompt i's j-th, as OpenAI orders them. Every choice is a
job of its own, so they decode in parallel; a streamed response interleaves their chunks as they come, each
with its `index`. The spec has already validated types and ranges; this module refuses what is left.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
import uuid
from typing import Iterator

from jan_server.errors import ApiError, InvalidRequestError
from jan_server.models import raw_prompt
from jan_server.models.batching import Job, Runner
from jan_server.web import sse
from jan_server.web.chat import DONE

#: OpenAI's default `max_tokens` for completions.
DEFAULT_MAX_TOKENS = 16


def prompts_of(body: dict) -> list[raw_prompt.Prompt]:
    return raw_prompt.listed(body["prompt"])


def parameters_of(body: dict) -> dict:
    """The generation parameters given (the model's defaults fill the rest), `max_tokens` defaulting as on OpenAI."""
    given = {name: body.get(name) for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "stop")}
    given["max_tokens"] = body.get("max_tokens") or DEFAULT_MAX_TOKENS
    return {name: value for name, value in given.items() if value is not None}


def choices_per_prompt(body: dict, runner: Runner) -> int:
    """`n`, at most the model's parallel sequences; `best_of` may only repeat it (the server does not rank)."""
    n = body.get("n") or 1
    if n > runner.n_slots:
        raise InvalidRequestError(
            f"n={n} is more than this model decodes at once (n_parallel={runner.n_slots}).", param="n", code="unsupported_value"
        )
    best_of = body.get("best_of")
    if best_of not in (None, 1, n):
        raise InvalidRequestError(
            "best_of is not supported (the server does not rank completions): leave it out, or make it equal to n.",
            param="best_of",
            code="unsupported_parameter",
        )
    return n


def prepare(runner: Runner, body: dict) -> list[Job]:
    """The jobs of every choice, in choice order; a choice after the first of a prompt samples with `seed` + j."""
    n = choices_per_prompt(body, runner)
    jobs = []
    for prompt in prompts_of(body):
        job = runner.prepare_text(prompt, parameters_of(body), suffix=body.get("suffix"))
        jobs.append(job)
        for j in range(1, n):
            seed = None if job.sampling.seed is None else job.sampling.seed + j
            jobs.append(Job(prompt_tokens=job.prompt_tokens, sampling=dataclasses.replace(job.sampling, seed=seed, stop=list(job.sampling.stop))))
    return jobs


def submit(runner: Runner, jobs: list[Job]) -> None:
    """Queue every job, or none: if one is refused (a full queue: 429), those already queued are cancelled."""
    for count, job in enumerate(jobs):
        try:
            runner.submit(job)
        except ApiError:
            cancel(jobs[:count])
            raise


def cancel(jobs: list[Job]) -> None:
    for job in jobs:
        job.cancel()


def echoes(runner: Runner, body: dict, jobs: list[Job]) -> list[str]:
    """Each choice's echoed prompt text (`echo`), or empty strings."""
    if not body.get("echo"):
        return [""] * len(jobs)
    n = len(jobs) // len(prompts_of(body))
    texts = [prompt if isinstance(prompt, str) else runner.detokenize(prompt) for prompt in prompts_of(body)]
    return [texts[i // n] for i in range(len(jobs))]


def usage(jobs: list[Job], n: int) -> dict:
    """Each prompt counted once, every choice's completion tokens."""
    prompt = sum(len(job.prompt_tokens) for job in jobs[::n])
    completion = sum(job.completion_tokens for job in jobs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def completion(jobs: list[Job], echoed: list[str], model: str, n: int) -> dict:
    """The `text_completion` object, once every job has finished (reading them in order: they run in parallel)."""
    try:
        texts = [echo + job.result() for echo, job in zip(echoed, jobs)]
    except ApiError:
        cancel(jobs)
        raise
    return {
        "id": completion_id(),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": index, "text": text, "logprobs": None, "finish_reason": job.finish_reason}
            for index, (text, job) in enumerate(zip(texts, jobs))
        ],
        "usage": usage(jobs, n),
    }


def stream(jobs: list[Job], echoed: list[str], model: str, n: int, include_usage: bool = False) -> Iterator[bytes]:
    """The SSE body: each choice's text chunks as they come (the echo first), one chunk with its finish_reason,
    optional usage (empty `choices`), [DONE]. A failed choice ends the stream with an `error` event."""
    head = {"id": completion_id(), "object": "text_completion", "created": int(time.time()), "model": model}
    if include_usage:
        head["usage"] = None

    def chunk(index: int, text: str, finish_reason: str | None = None) -> bytes:
        return sse.event({**head, "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}]})

    for index, echo in enumerate(echoed):
        if echo:
            yield chunk(index, echo)
    for index, kind, value in interleaved(jobs):
        if kind == "delta":
            yield chunk(index, value)
        elif kind == "error":  # the handler cancels the other choices when the stream ends
            yield sse.event(value.to_dict(), "error")
            yield DONE
            return
        elif jobs[index].finish_reason is None:  # cancelled: the client is gone
            return
        else:
            yield chunk(index, "", jobs[index].finish_reason)
    if include_usage:
        yield sse.event({**head, "choices": [], "usage": usage(jobs, n)})
    yield DONE


def interleaved(jobs: list[Job]) -> Iterator[tuple[int, str, object]]:
    """(choice index, "delta", text), (index, "done", None) or (index, "error", ApiError) from every job, in the
    order they come. A thread per job reads it (Job's own iteration, with its liveness check) into one queue."""
    merged: queue.SimpleQueue = queue.SimpleQueue()

    def read(index: int, job: Job) -> None:
        try:
            for text in job:
                merged.put((index, "delta", text))
        except ApiError as exc:
            merged.put((index, "error", exc))
        else:
            merged.put((index, "done", None))

    for index, job in enumerate(jobs):
        threading.Thread(target=read, args=(index, job), name=f"completion-choice-{index}", daemon=True).start()
    remaining = len(jobs)
    while remaining:
        item = merged.get()
        remaining -= item[1] != "delta"
        yield item
