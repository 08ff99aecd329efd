"""Responses: a request's context (the `previous_response_id` chain or the `conversation`'s items, then
`instructions` and the new input), its generation on the model's Runner, background responses and cancel.

A background response runs on a thread of its own that outlives its request; its state is stored as it moves
(queued, in_progress, then completed/incomplete/cancelled/failed). Servers may share a database (replicas): each
unfinished response is owned by the server process that runs it, which refreshes its heartbeat every HEARTBEAT_S
and at each heartbeat stops those deleted or asked to cancel (by a cancel sent to another replica). A server that
stops fails the ones it still runs (its models cancel their jobs); those of a server that crashed are failed once
their heartbeat is STALE_S old, by a server that starts or reads them. So the replicas' clocks must agree to within
a few seconds.
"""

from __future__ import annotations

import logging
import threading
import time

from jan_server.errors import ApiError, InvalidRequestError, ServerError
from jan_server.models.batching import Runner
from jan_server.models.grammar import grammar_of
from jan_server.models.jobs import Job, route
from jan_server.models.lifecycle import ModelManager
from jan_server.responses import file_search, items, tooling
from jan_server.responses.generation import Generation, response_object
from jan_server.storage.records import new_id
from jan_server.storage.responses import UNFINISHED
from jan_server.storage.store import Store

log = logging.getLogger(__name__)

#: Seconds a cancel waits for its background response to stop; the scheduler drops a cancelled job within a
#: token, so only a stuck model reaches this, and the response is returned as it then stands.
CANCEL_WAIT_S = 60
#: Seconds between a cancel's reads of a response another replica runs, until that one stored it cancelled.
CANCEL_POLL_S = 0.25
#: Seconds between the heartbeats of a server's unfinished background responses.
HEARTBEAT_S = 2.0
#: Age of a heartbeat after which its response counts as orphaned (its server stopped or crashed): ten missed
#: beats, so that a server slowed by load, or waiting for the database, is not taken for dead.
STALE_S = 20.0
#: Seconds closing the service waits for each background thread once the models have cancelled their jobs.
CLOSE_WAIT_S = 30
#: The error stored on a background response that a server stop (or crash) interrupted.
INTERRUPTED = {"code": "server_error", "message": "The server stopped before this background response finished."}


def parameters_of(body: dict) -> dict:
    """The request's generation parameters (only those given; the model's own defaults fill the rest)."""
    text_format = (body.get("text") or {}).get("format")
    if text_format and text_format.get("type") == "json_schema":  # chat's shape nests the schema one level down
        text_format = {"type": "json_schema", "json_schema": {"schema": text_format.get("schema")}}
    given = {
        "max_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "presence_penalty": body.get("presence_penalty"),
        "frequency_penalty": body.get("frequency_penalty"),
        "grammar": grammar_of(text_format, schema_param="text.format.schema"),
    }
    return {name: value for name, value in given.items() if value is not None}


def routing(body: dict, conversation_id: str | None, response_id: str) -> dict:
    """Where the response's job looks for its conversation's cells and the name it leaves on its slot
    (jan_server.models.slots): its `prompt_cache_key`, else its conversation, else the response it continues."""
    if body.get("prompt_cache_key") is not None or conversation_id is not None:
        named = route("key", body["prompt_cache_key"]) if body.get("prompt_cache_key") is not None else route("conversation", conversation_id)
        return {"route": named, "label": named}
    return {"route": route("response", body.get("previous_response_id")), "label": route("response", response_id)}


def conversation_id_of(body: dict) -> str | None:
    conversation = body.get("conversation")
    return conversation.get("id") if isinstance(conversation, dict) else conversation


def prepare(runner: Runner, instructions: str | None, context: list[dict], parameters: dict, truncation: str, offered: list[dict]) -> Job:
    """The job for the context, offering `offered` (chat's tools); with truncation `auto` the oldest items are dropped until
    the prompt fits, with `disabled` a prompt that does not fit is a 400 `context_length_exceeded`."""
    head = [{"role": "system", "content": instructions}] if instructions else []
    messages = items.chat_messages(context)
    for start in range(len(messages)):
        try:
            return runner.prepare(head + messages[start:], parameters, offered or None)
        except InvalidRequestError as exc:
            if exc.code != "context_length_exceeded":
                raise
            if truncation != "auto" or start == len(messages) - 1:
                raise InvalidRequestError(exc.message.replace("messages", "input"), param="input", code="context_length_exceeded") from None
    return runner.prepare(head, parameters, offered or None)  # no items at all: the instructions alone


class ResponseService:
    def __init__(self, store: Store, models: ModelManager, searcher=None):
        self.store = store
        self.models = models
        self.searcher = searcher  # jan_server.retrieval.search.Searcher, for the file_search tool
        self.owner = new_id("server_")  # this process, as the owner of the background responses it runs
        self._background: dict[str, tuple[Generation, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._heart = threading.Thread(target=self._beat_until_closed, name="response-heartbeat", daemon=True)
        self._heart.start()

    def fail_interrupted(self) -> int:
        """At start: background responses left unfinished by a server that stopped or crashed are failed (those
        whose heartbeat is stale: a live replica's go on)."""
        return self.store.responses.fail_orphaned(INTERRUPTED, time.time() - STALE_S)

    def get(self, response_id: str) -> dict:
        """The stored response; an orphaned one is failed first."""
        response = self.store.responses.get(response_id)
        if response["status"] in UNFINISHED and self.store.responses.fail_orphaned(INTERRUPTED, time.time() - STALE_S, response_id):
            response = self.store.responses.get(response_id)
        return response

    def delete(self, response_id: str) -> dict:
        """Delete a response; one this process runs stops at once (another replica's stops at its next heartbeat)."""
        deleted = self.store.responses.delete(response_id)
        with self._lock:
            running = self._background.get(response_id)
        if running is not None:
            running[0].job.cancel()
        return deleted

    def context(self, body: dict, held: list[dict] | None = None) -> tuple[list[dict], list[dict]]:
        """The context a request continues (`held`: its previous response's chain as the caller kept it, else the
        stored `previous_response_id` chain or the conversation's items) and its new input items; 400 for an
        image, or a call output that answers no call."""
        conversation_id = conversation_id_of(body)
        if held is not None:
            context = held
        elif body.get("previous_response_id"):
            context = self.store.responses.chain(body["previous_response_id"])
        elif conversation_id:
            context = self.store.conversations.context(conversation_id)
        else:
            context = []
        given = body.get("input") or []
        new_items = items.input_items(given, model=body["model"])
        items.check_call_outputs(context + new_items)
        return context, new_items

    def create(self, body: dict, cancelled: threading.Event | None = None, held: list[dict] | None = None) -> Generation:
        """A generation for the request, submitted to its model; `cancelled` (the client left) stops it. `held`:
        see context()."""
        conversation_id = conversation_id_of(body)
        context, new_items = self.context(body, held)
        offer = tooling.offer(body)
        asked = [item for item in new_items if item["type"] == "message" and item["role"] == "user"]
        search = file_search.FileSearch.of(body, self.searcher, self.store, items.text_of(asked[-1]["content"]) if asked else None)
        plan = offer.plan
        if plan is not None and parameters_of(body).get("grammar"):
            raise InvalidRequestError("A JSON text.format cannot be combined with tools the model may call.", param="text.format")
        response_id = new_id("resp_")
        parameters = {**parameters_of(body), **(plan.parameters() if plan else {}), **routing(body, conversation_id, response_id)}
        with self.models.serving(body["model"]) as runner:  # not stopped to make room or for being idle meanwhile
            job = prepare(runner, body.get("instructions"), context + new_items, parameters, body.get("truncation") or "disabled", offer.chat_tools)
            if cancelled is not None:
                job.cancelled = cancelled
            runner.submit(job)
        generation = Generation(response_object(response_id, body, job, conversation_id), job, new_items, self.store, plan, context=context, tools=offer,
                                search=search, resume=lambda searched: self._answer(body, searched))
        if body.get("background"):
            generation.owner = self.owner
            try:
                generation.save_state("queued")  # once the model took the job: a refused request leaves nothing
            except BaseException:
                job.cancel()
                raise
            generation.on_first_text = lambda started: started.save_state("in_progress")
        return generation

    def _answer(self, body: dict, generation: Generation) -> Job:
        """The job that answers after a file search: the context, input and output so far (the search's results
        in it, whether or not the response shows them), offering no tools, in what is left of max_output_tokens."""
        parameters = {**parameters_of(body), **routing(body, conversation_id_of(body), generation.id)}
        if "max_tokens" in parameters:
            parameters["max_tokens"] = max(1, parameters["max_tokens"] - sum(job.completion_tokens for job in generation.spent))
        shown = [generation.search.full(item) if item["type"] == file_search.KIND else item for item in generation.output("completed")]
        with self.models.serving(body["model"]) as runner:
            job = prepare(runner, body.get("instructions"), generation.context + generation.input_items + shown, parameters,
                          body.get("truncation") or "disabled", [])
            job.cancelled = generation.job.cancelled
            runner.submit(job)
        return job

    def run(self, generation: Generation) -> dict:
        """Generate to the end in this thread; the final object."""
        try:
            for _ in generation.outputs():
                pass
        except ApiError as exc:
            generation.fail(exc)
            raise
        return generation.finish()

    def background(self, generation: Generation) -> dict:
        """Run the generation on its own thread; the response as stored now (queued)."""
        thread = threading.Thread(target=self._run_background, args=(generation,), name=f"response-{generation.id}", daemon=True)
        with self._lock:
            self._background[generation.id] = (generation, thread)
        thread.start()
        return generation.response

    def _run_background(self, generation: Generation) -> None:
        try:
            self.run(generation)
        except ApiError:
            pass  # stored as failed by run()
        except Exception as exc:  # never lose a background response silently
            generation.fail(ServerError(f"Generation failed: {exc}", code="generation_failed"))
        finally:
            with self._lock:
                self._background.pop(generation.id, None)

    def cancel(self, response_id: str) -> dict:
        """Stop a background response and return it as stored then; one that is not running (it ended, or did not
        run in the background) is returned as it is. One another replica runs is stopped by that replica, at its
        next heartbeat."""
        response = self.get(response_id)  # 404 for an unknown id
        if response["status"] not in UNFINISHED:
            return response
        with self._lock:
            running = self._background.get(response_id)
        if running is not None:
            generation, thread = running
            generation.job.cancel()
            thread.join(CANCEL_WAIT_S)
            return self.get(response_id)
        self.store.responses.request_cancel(response_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while response["status"] in UNFINISHED and time.monotonic() < deadline:
            time.sleep(CANCEL_POLL_S)
            response = self.get(response_id)  # failed meanwhile if its owner is found dead
        return response

    def beat(self) -> None:
        """Refresh the heartbeat of the background responses this process runs, and stop those that are gone
        (deleted, or failed as orphaned) or that a cancel sent to another replica asked to stop."""
        with self._lock:
            running = [generation for generation, _ in self._background.values()]
        if not running:
            return
        live = self.store.responses.heartbeat(self.owner)
        for generation in running:
            if live.get(generation.id, True):
                generation.job.cancel()

    def _beat_until_closed(self) -> None:
        while not self._closed.wait(HEARTBEAT_S):
            try:
                self.beat()
            except Exception:  # the database away for a moment: the next beat tries again
                log.exception("could not refresh the heartbeat of this server's background responses")

    def close(self) -> None:
        """Wait for the background threads, which end once the models (closed first) cancel their jobs."""
        with self._lock:
            threads = [thread for _, thread in self._background.values()]
        for thread in threads:
            thread.join(CLOSE_WAIT_S)
        self._closed.set()
        self._heart.join(CLOSE_WAIT_S)
