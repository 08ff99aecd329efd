"""Routing by what the client says (jan_server.models.slots): `prompt_cache_key` (chat, completions, Responses),
a Responses `conversation` or `previous_response_id`, a Messages `metadata.user_id` with a `cache_control` marker
seat a request in the slot its conversation last used.

Two conversations share a long system prompt and alternate on two slots. Without routing, the second one's first
turn takes the first one's slot (it holds most of its prompt: the system prompt), so, with no prompt cache to
restore from, the first one's next turn reads its history again. With routing each keeps a slot of its own."""

from __future__ import annotations

import httpx
import pytest

from jan_server.models.registry import BUNDLED_MODEL_ID
from jan_server.models.slots import FreeSlots, SlotCache
from jan_server.web.anthropic import request_of
from tests.fake_scheduler import job, outcome
from tests.live_server import PATIENT, LiveServer

SYSTEM = "You are a careful assistant. " + "Follow the house rules and answer briefly. " * 40  # ~330 tokens


def test_a_routed_job_takes_its_own_slot_and_leaves_others_alone():
    slots = FreeSlots(3)
    system = list(range(100, 140))
    slots.put(0, SlotCache(system + [1, 2], None, 42, 42, "key:a"))
    slots.put(1, SlotCache(system + [3, 4], None, 42, 42, "key:b"))
    assert slots.take(system + [5], False, set(), "key:c")[0] == 2  # an unclaimed slot, not a or b's
    slots.put(2, SlotCache(system + [5], None, 41, 41, "key:c"))
    assert slots.take(system + [3, 4, 9], False, set(), "key:a")[0] == 0  # a's own, though b's holds more
    slots.put(0, SlotCache(system + [3, 4, 9], None, 43, 43, "key:a"))
    assert slots.take(system + [5, 6], False, set())[0] == 2  # no route: the longest prefix, as before
    slots.put(2, SlotCache(system + [5, 6], None, 42, 42, "key:c"))
    assert slots.take(system + [3, 4, 9, 7], False, set(), "key:d")[0] == 1  # every slot claimed: the least recently used


@pytest.mark.parametrize("keyed", [True, False])
def test_two_keyed_conversations_alternate_in_slots_of_their_own(make, keyed):
    scheduler, _ = make(2, n_batch=64)
    system = list(range(100, 140))
    prompts = {"a": system + [1, 1], "b": system + [2, 2]}
    for turn in range(3):
        for name in ("a", "b"):
            asked = job(prompt=prompts[name], max_tokens=2)
            asked.route = asked.label = f"key:{name}" if keyed else None
            assert outcome(scheduler.submit(asked))[1] == "length"
            if turn:  # the previous prompt and its answer's decoded token are in the slot
                assert (asked.cached_tokens == len(prompts[name]) - 2) == keyed
            prompts[name] = prompts[name] + [1, 90 + turn, 91 + turn]


@pytest.fixture(scope="module")
def uncached(tmp_path_factory):
    """A server of its own without a prompt cache beyond the slots (so only slots can serve a prompt), 2 slots."""
    with LiveServer(tmp_path_factory.mktemp("routing"), args=("--cache-ram", "0", "--cache-disk", "0")) as server:
        httpx.put(f"{server.api_url}/models/{BUNDLED_MODEL_ID}/start", json={"n_parallel": 2}, timeout=PATIENT).raise_for_status()
        with httpx.Client(base_url=server.api_url, timeout=PATIENT) as client:
            yield client


def chat_turns(client: httpx.Client, key: str | None) -> list[tuple[int, int]]:
    """Two conversations, two turns each, alternating: each later turn's (prompt tokens, cached tokens)."""
    conversations = {name: [{"role": "system", "content": f"{key} {SYSTEM}"}] for name in ("a", "b")}
    seen = []
    for turn in range(2):
        for name, messages in conversations.items():
            messages.append({"role": "user", "content": f"Conversation {name} ({key}), question {turn}: name a colour."})
            body = {"model": BUNDLED_MODEL_ID, "messages": messages, "max_tokens": 8, "temperature": 0}
            answer = client.post("/chat/completions", json=body | ({"prompt_cache_key": f"{key}-{name}"} if key else {})).json()
            messages.append({"role": "assistant", "content": answer["choices"][0]["message"]["content"]})
            if turn:
                seen.append((answer["usage"]["prompt_tokens"], answer["usage"]["prompt_tokens_details"]["cached_tokens"]))
    return seen


def test_chat_conversations_keyed_by_prompt_cache_key_keep_their_slots(uncached):
    assert any(prompt - cached > 40 for prompt, cached in chat_turns(uncached, None))  # one read its history again
    assert all(prompt - cached < 40 for prompt, cached in chat_turns(uncached, "chat"))  # the new message only


def test_completions_and_responses_route_too(uncached):
    texts = {name: SYSTEM + f"\nConversation {name}:" for name in ("a", "b")}
    previous: dict[str, str | None] = {"a": None, "b": None}
    for turn in range(2):
        for name in ("a", "b"):
            completion = uncached.post("/completions", json={"model": BUNDLED_MODEL_ID, "prompt": texts[name], "max_tokens": 4,
                                                             "temperature": 0, "prompt_cache_key": f"completion-{name}"}).json()
            if turn:
                usage = completion["usage"]
                assert usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"] < 20
            texts[name] += completion["choices"][0]["text"] + " and then"
            body = {"model": BUNDLED_MODEL_ID, "input": f"{SYSTEM}\nConversation {name}, question {turn}.", "max_output_tokens": 8,
                    "temperature": 0} if previous[name] is None else {
                "model": BUNDLED_MODEL_ID, "input": f"Question {turn}.", "previous_response_id": previous[name], "max_output_tokens": 8, "temperature": 0}
            response = uncached.post("/responses", json=body).json()
            if turn:
                usage = response["usage"]
                assert usage["input_tokens"] - usage["input_tokens_details"]["cached_tokens"] < 40
            previous[name] = response["id"]


MARKED = {"type": "ephemeral"}


def messages_route(**given) -> str | None:
    body = {"model": BUNDLED_MODEL_ID, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}], **given}
    return request_of(body).parameters.get("route")


def test_a_messages_route_is_the_user_id_and_the_content_up_to_the_first_marker():
    system = [{"type": "text", "text": "You are Claude Code.", "cache_control": MARKED}, {"type": "text", "text": "Today is Monday."}]
    session = messages_route(system=system, metadata={"user_id": "user_1_session_a"})
    assert session.startswith("cache:") and len(session) < 24  # a short hash
    later = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
             {"role": "user", "content": [{"type": "text", "text": "Go on.", "cache_control": {**MARKED, "ttl": "1h"}}]}]
    assert messages_route(system=system, metadata={"user_id": "user_1_session_a"}, messages=later) == session  # its next turn
    background = [{"type": "text", "text": "Summarise the topic.", "cache_control": MARKED}]
    assert messages_route(system=background, metadata={"user_id": "user_1_session_a"}) not in (session, None)
    assert messages_route(system=system, metadata={"user_id": "user_1_session_b"}) not in (session, None)
    tool = {"name": "read", "input_schema": {"type": "object"}, "cache_control": MARKED}  # tools come first
    assert messages_route(system=system, tools=[tool], metadata={"user_id": "user_1_session_a"}) not in (session, None)
    assert messages_route(system=system, metadata={}) is None  # no user id: prefix matching
    assert messages_route(system="You are Claude Code.", metadata={"user_id": "user_1_session_a"}) is None  # no marker


def test_messages_conversations_of_two_sessions_keep_their_slots(uncached):
    def later_turns(user_ids: dict) -> list[int]:
        """Two sessions, two turns each, alternating: the input tokens each later turn read."""
        system = [{"type": "text", "text": f"{user_ids} {SYSTEM}", "cache_control": MARKED}]
        conversations: dict[str, list] = {name: [] for name in user_ids}
        read = []
        for turn in range(2):
            for name, messages in conversations.items():
                messages.append({"role": "user", "content": f"Session {name}, question {turn}: name a colour."})
                body = {"model": BUNDLED_MODEL_ID, "system": system, "messages": messages, "max_tokens": 8, "temperature": 0,
                        "metadata": {"user_id": user_ids[name]}}
                answer = uncached.post("/messages", json=body).json()
                messages.append({"role": "assistant", "content": answer["content"] or "Red."})
                if turn:
                    read.append(answer["usage"]["input_tokens"])
        return read

    assert any(read > 40 for read in later_turns({"a": None, "b": None}))  # one read its history again
    assert all(read < 40 for read in later_turns({"a": "user_1_session_a", "b": "user_1_session_b"}))  # the new message only
