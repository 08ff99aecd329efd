"""The model service's usage events (jan_server.models.usage) on the scheduler with the fake backend of
tests/test_scheduler.py: one token event per generated token, the first timed from submission; busy slots."""

from __future__ import annotations

from jan_server.models.usage import TokenClock, Usage
from tests.fake_scheduler import ENDLESS, first_delta, job, outcome


class Recorder:
    def __init__(self):
        self.prompts: list[tuple[str, int]] = []
        self.tokens: list[tuple[str, bool]] = []

    def prompt(self, model_id, tokens):
        self.prompts.append((model_id, tokens))

    def token(self, model_id, seconds, first):
        assert seconds >= 0
        self.tokens.append((model_id, first))


def test_every_generated_token_is_reported_once_the_first_marked(make):
    scheduler, _backend = make(2)
    usage, recorder = Usage(), Recorder()
    usage.observers.append(recorder)
    submitted = []
    for prompt in ((1, 2, 3), (4, 5)):
        queued = job(prompt=prompt)
        usage.watch("fake", queued)
        scheduler.submit(queued)
        usage.accepted("fake", queued)
        submitted.append(queued)
    assert [outcome(done) for done in submitted] == [("<1><2><3>", "length")] * 2
    assert recorder.prompts == [("fake", 3), ("fake", 2)]
    assert len(recorder.tokens) == 6 and recorder.tokens.count(("fake", True)) == 2


def test_without_observers_jobs_are_not_timed():
    queued = job()
    Usage().watch("fake", queued)
    assert not isinstance(queued.on_token, TokenClock)  # the job's default, which does nothing


def test_busy_slots_counts_the_generating_jobs(make):
    scheduler, _backend = make(3)
    running = [scheduler.submit(job(seed=n, max_tokens=ENDLESS)) for n in range(2)]
    for generating in running:
        first_delta(generating)
    assert scheduler.stats()["busy_slots"] == 2
    for generating in running:
        generating.cancel()
        generating.result()
