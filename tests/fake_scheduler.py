"""The scheduler's test double: a fake backend that samples token 1, 2, 3, ... for each sequence (its text is
"<1><2><3>..."; a job's `seed` labels it), and the helpers the scheduler's tests share (`make` is conftest's fixture)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from jan_server.errors import ApiError
from jan_server.models.jobs import Job, Sampling
from jan_server.models.kv import Cells

WAIT = 30  # seconds: the most any wait below may take on a loaded machine; they normally take milliseconds
ENDLESS = 10**9  # max_tokens of a job that runs until it is cancelled


class Crash(BaseException):
    """Kills the scheduler thread (nothing in the scheduler catches a BaseException)."""


class FakeSampler:
    def __init__(self, sampling: Sampling):
        self.sampling = sampling
        self.count = 0

    def next(self) -> int:
        if self.sampling.grammar == "fail-sample":
            raise RuntimeError("this sampler is broken")
        self.count += 1
        return self.count


class FakeBackend:
    """Records what the scheduler asks; `delay` seconds per decode; `fail_next_clear`, `crash` inject faults."""

    def __init__(self, delay: float = 0.0, min_chunk: int = 2, cells: int = 0):
        self.delay = delay
        self.cells = Cells(cells) if cells else None  # shared cells (a unified cache) of that many, or per slot
        self._counts: dict[bytes, int] = {}  # the cells each saved state holds
        self.rows: list[list[tuple]] = []  # every decode's rows
        self.seated: list[int | None] = []  # the seed of each job given a sampler, in order
        self.cleared: list[tuple[int, int]] = []
        self.copied: list[tuple[int, int]] = []
        self.saved: list[int] = []  # the slots whose cells went to the host cache
        self.restored: list[tuple[int, bytes]] = []
        self.freed = 0
        self.cached_samples = 0
        self.fail_next_clear = False
        self.crash = False
        self.min_chunk = min_chunk

    def make_sampler(self, sampling):
        if sampling.grammar == "fail-sampler":
            raise ValueError("the grammar could not be parsed")
        self.seated.append(sampling.seed)
        return FakeSampler(sampling)

    def free_sampler(self, sampler):
        self.freed += 1

    def clear(self, seq_id, start):
        if self.fail_next_clear:
            self.fail_next_clear = False
            raise RuntimeError("could not clear the cells")
        self.cleared.append((seq_id, start))
        if self.cells:
            self.cells.clear(seq_id, start)

    def copy(self, source, target):
        self.copied.append((source, target))
        if self.cells:
            self.cells.copy(source, target)

    def save(self, seq_id):
        self.saved.append(seq_id)
        state = f"cells of slot {seq_id}, save {len(self.saved)}".encode()
        self._counts[state] = self.cells.held(seq_id) if self.cells else 0
        return state

    def restore(self, seq_id, state):
        self.restored.append((seq_id, state))
        if self.cells:
            self.cells.restore(seq_id, self._counts[state])

    def decode(self, rows, exact):
        if self.crash:
            raise Crash()
        if self.delay:
            time.sleep(self.delay)
        self.rows.append([(seq_id, position, list(tokens), logits) for seq_id, position, tokens, logits in rows])
        for seq_id, position, tokens, _ in rows if self.cells else ():
            assert self.cells.free >= len(tokens), "a decode with no room for its tokens"
            self.cells.grow(seq_id, position, len(tokens))

    def logits(self, row):
        return ("logits", row)

    def sample(self, sampler, row):
        return sampler.next()

    def sample_cached(self, sampler, logits):
        self.cached_samples += 1
        return sampler.next()

    def piece(self, token):
        return f"<{token}>".encode()

    def is_eog(self, token):
        return token == 0


def job(prompt=(1, 2, 3), max_tokens=3, seed=None, grammar=None, deterministic=True) -> Job:
    """A job; deterministic, so that a seed asks for a cold read's text (Job.exact)."""
    sampling = Sampling.from_parameters({"max_tokens": max_tokens, "seed": seed, "grammar": grammar})
    return Job(prompt_tokens=list(prompt), sampling=sampling, deterministic=deterministic)


def first_delta(running: Job) -> str:
    """The first text of a job: once it is here, the job is generating in a slot."""
    return next(iter(running))


def outcome(finished: Job) -> tuple[str, str | None]:
    return finished.result(), finished.finish_reason


def error_of(failed: Job) -> ApiError:
    with pytest.raises(ApiError) as raised:
        failed.result()
    return raised.value


def within_wait(call):
    """call()'s value, or a failed assertion after WAIT seconds where a stuck scheduler would hang the test."""
    returned = []
    caller = threading.Thread(target=lambda: returned.append(call()), daemon=True)
    caller.start()
    caller.join(WAIT)
    assert returned, f"still waiting after {WAIT} s"
    return returned[0]


def smallest_n_batch() -> int:
    """The least n_batch a start request may ask for."""
    spec = yaml.safe_load((Path(__file__).parent.parent / "specs" / "models.yaml").read_text())
    return spec["components"]["schemas"]["StartModelRequest"]["properties"]["n_batch"]["minimum"]


def stick(backend) -> tuple[threading.Event, threading.Event]:
    """Make the backend's decodes wait: (set once one has begun, set to let them go on)."""
    decoding, release, decode = threading.Event(), threading.Event(), backend.decode

    def stuck(rows, exact):
        decoding.set()
        release.wait()
        decode(rows, exact)

    backend.decode = stuck
    return decoding, release
