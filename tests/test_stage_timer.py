"""StageTimer sums each stage's seconds over the threads that do it, losing none when they add at once."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from lipsyncd.engine import pipeline
from lipsyncd.engine.pipeline import StageTimer

THREADS, ROUNDS = 4, 25


class SlowReads(defaultdict):
    """Reading an entry gives the other threads time to run, as a busy machine does: without a lock,
    two threads then read the same old sum and one of the two additions is lost."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        time.sleep(0.0005)
        return value


def test_no_thread_s_seconds_are_lost(monkeypatch):
    clock = threading.local()

    def perf_counter() -> float:  # each thread's own clock, one second a tick: every stage lasts 1 s
        clock.now = getattr(clock, "now", 0.0) + 1.0
        return clock.now

    monkeypatch.setattr(pipeline.time, "perf_counter", perf_counter)
    timer = StageTimer()
    timer.seconds = SlowReads(float)

    def work() -> None:
        for _ in range(ROUNDS):
            with timer("blend"):
                pass

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert timer.seconds["blend"] == THREADS * ROUNDS
