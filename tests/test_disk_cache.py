"""The prompt cache's disk tier (jan_server.models.disk_cache) without a model: what it writes a restart reads,
and what is torn or damaged is never loaded."""

from __future__ import annotations

import numpy as np

from jan_server.models.disk_cache import SUFFIX, DiskCache
from jan_server.models.prompt_cache import HostCache
from jan_server.models.slots import SlotCache

STATE = bytes(range(256)) * 40  # an opaque state of 10 KiB


def written(directory, budget=1 << 20, entries=((list(range(10, 60)), 50),)) -> DiskCache:
    disk = DiskCache(directory, budget)
    for tokens, exact in entries:
        disk.put("model", SlotCache(tokens, np.arange(8, dtype=np.float32), len(tokens), exact), STATE)
    disk.flush()
    return disk


def test_an_entry_written_is_found_and_loaded_after_a_restart(tmp_path):
    written(tmp_path)
    restarted = DiskCache(tmp_path, 1 << 20)
    stored, shared = restarted.best("model", list(range(10, 70)), exact=False)
    assert shared == 50 and restarted.best("another model", list(range(10, 70)), exact=False) == (None, 0)
    cells, state = restarted.load(stored)
    assert (cells.tokens, cells.exact, cells.logits_at, state) == (list(range(10, 60)), 50, 50, STATE)
    assert cells.logits.tolist() == list(range(8))
    host = HostCache(1 << 20, disk=restarted)  # the host tier loads it back when it serves a prompt best
    entry, shared = host.best("model", list(range(10, 55)), exact=True)
    assert shared == 45 and entry.state == STATE and len(host) == 1


def test_a_torn_entry_or_a_crashed_write_is_deleted_at_start(tmp_path):
    written(tmp_path)
    (entry,) = tmp_path.glob(f"*{SUFFIX}")
    entry.write_bytes(entry.read_bytes()[:-100])  # torn: shorter than its header says
    (tmp_path / "left-by-a-crash.tmp").write_bytes(b"half")
    restarted = DiskCache(tmp_path, 1 << 20)
    assert restarted.best("model", list(range(10, 60)), exact=False) == (None, 0)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_entry_is_skipped_not_loaded(tmp_path):
    written(tmp_path)
    (entry,) = tmp_path.glob(f"*{SUFFIX}")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte of the state changed
    entry.write_bytes(bytes(data))
    host = HostCache(1 << 20, disk=DiskCache(tmp_path, 1 << 20))
    assert host.best("model", list(range(10, 60)), exact=False) == (None, 0)
    assert not entry.exists()


def test_the_disk_tier_keeps_within_its_budget_and_one_entry_covers_its_prefixes(tmp_path):
    budget = 3 * len(STATE)
    disk = written(tmp_path, budget, [(list(range(n, n + 50)), 50) for n in range(0, 500, 100)])
    assert sum(path.stat().st_size for path in tmp_path.iterdir()) <= budget
    assert disk.best("model", list(range(400, 450)), exact=False)[1] == 50  # the newest stays
    assert disk.best("model", list(range(0, 50)), exact=False) == (None, 0)  # the oldest went
    written(tmp_path, budget, [(list(range(400, 480)), 80)])
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 2  # 400..479 replaced 400..449
