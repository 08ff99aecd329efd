"""Responses: a request's context (the `previous_response_id` chain or the `conversation`'s items, then
`instructions` and the new input), its generation on the model's Runner, background responses and cancel.

A background response runs on a thread of its own that outlives its request; its state is stored as it moves
(queued, in_progress, then completed/incomplete/cancelled/failed). A server that stops fails the ones still
running (its models cancel their jobs), and one that starts marks those a crash left unfinished as failed.
"""

from __future__ import annotations

import threading

from jan_server.errors import ApiError, InvalidRequestError, ServerError
from jan_server.models.batching import Runner
from jan_server.models.grammar import grammar_of
from jan_server.models import tools
from jan_server.models.jobs import Job
from jan_server.models.lifecycle import ModelManager
from jan_server.responses import items
from jan_server.responses.generation import Generation, response_object
from jan_server.storage.records import new_id
from jan_server.storage.store import Store

#: Seconds a cancel waits for its background response to stop; the scheduler drops a cancelled job within a
#: token, so only a stuck model reaches this, and the response is returned as it then stands.
CANCEL_WAIT_S = 60
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
        "grammar": grammar_of(text_format, schema_param="text.format.schema"),
    }
    return {name: value for name, value in given.items() if value is not None}


def tool_plan(body: dict) -> tuple[tools.ToolPlan | None, list[dict]]:
    """The request's function tools in chat's shape, and what they ask of this generation (None: no calls)."""
    functions = [
        {"type": "function", "function": {key: tool[key] for key in ("name", "description", "parameters") if tool.get(key) is not None}}
        for tool in body.get("tools") or []
    ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = {"type": "function", "function": {"name": choice["name"]}}
    plan = tools.plan(functions, choice, body.get("parallel_tool_calls"))
    if plan is not None and parameters_of(body).get("grammar"):
        raise InvalidRequestError("A JSON text.format cannot be combined with tools the model may call.", param="text.format")
    return plan, functions


def conversation_id_of(body: dict) -> str | None:
    conversation = body.get("conversation")
    return conversation.get("id") if isinstance(conversation, dict) else conversation


def prepare(runner: Runner, instructions: str | None, context: list[dict], parameters: dict, truncation: str, functions: list[dict]) -> Job:
    """The job for the context, offering `functions`; with truncation `auto` the oldest items are dropped until
    the prompt fits, with `disabled` a prompt that does not fit is a 400 `context_length_exceeded`."""
    head = [{"role": "system", "content": instructions}] if instructions else []
    messages = items.chat_messages(context)
    for start in range(len(messages)):
        try:
            return runner.prepare(head + messages[start:], parameters, functions or None)
        except InvalidRequestError as exc:
            if exc.code != "context_length_exceeded":
                raise
            if truncation != "auto" or start == len(messages) - 1:
                raise InvalidRequestError(exc.message.replace("messages", "input"), param="input", code="context_length_exceeded") from None
    return runner.prepare(head, parameters, functions or None)  # no items at all: the instructions alone


class ResponseService:
    def __init__(self, store: Store, models: ModelManager):
        self.store = store
        self.models = models
        self._background: dict[str, tuple[Generation, threading.Thread]] = {}
        self._lock = threading.Lock()

    def fail_interrupted(self) -> int:
        """At start: background responses a stopped server left queued or in progress are failed."""
        return self.store.responses.fail_unfinished(INTERRUPTED)

    def create(self, body: dict, cancelled: threading.Event | None = None) -> Generation:
        """A generation for the request, submitted to its model; `cancelled` (the client left) stops it."""
        conversation_id = conversation_id_of(body)
        if body.get("previous_response_id"):
            context = self.store.responses.chain(body["previous_response_id"])
        elif conversation_id:
            context = self.store.conversations.context(conversation_id)
        else:
            context = []
        new_items = items.input_items(body["input"])
        items.check_call_outputs(context + new_items)
        plan, functions = tool_plan(body)
        parameters = {**parameters_of(body), **(plan.parameters() if plan else {})}
        runner = self.models.runner_for(body["model"])
        job = prepare(runner, body.get("instructions"), context + new_items, parameters, body.get("truncation") or "disabled", functions)
        if cancelled is not None:
            job.cancelled = cancelled
        generation = Generation(response_object(new_id("resp_"), body, job, conversation_id), job, new_items, self.store, plan)
        if body.get("background"):
            generation.save_state("queued")  # stored before the job is submitted: a cancel finds it
            generation.on_first_text = lambda started: started.save_state("in_progress")
        runner.submit(job)
        return generation

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
        """Stop a background response; one that is not running (it ended, or did not run in the background) is
        returned as it is."""
        self.store.responses.get(response_id)  # 404 for an unknown id
        with self._lock:
            running = self._background.get(response_id)
        if running is not None:
            generation, thread = running
            generation.job.cancel()
            thread.join(CANCEL_WAIT_S)
        return self.store.responses.get(response_id)

    def close(self) -> None:
        """Wait for the background threads, which end once the models (closed first) cancel their jobs."""
        with self._lock:
            threads = [thread for _, thread in self._background.values()]
        for thread in threads:
            thread.join(CLOSE_WAIT_S)
