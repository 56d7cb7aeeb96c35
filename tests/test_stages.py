"""The threading primitives: order kept, memory bounded, errors raised where the caller is."""

import threading
import time

import pytest

from lipsyncd.engine.stages import Sink, prefetch


def test_prefetch_keeps_order_and_stays_bounded():
    produced = []

    def numbers():
        for i in range(100):
            produced.append(i)
            yield i

    it = prefetch(numbers(), depth=3)
    assert next(it) == 0
    time.sleep(0.2)
    assert len(produced) <= 5  # one taken, three queued, one waiting to be put
    assert list(it) == list(range(1, 100))


def test_prefetch_raises_producer_error_in_consumer():
    def broken():
        yield 1
        raise ValueError("decoder broke")

    it = prefetch(broken(), depth=2)
    assert next(it) == 1
    with pytest.raises(ValueError, match="decoder broke"):
        next(it)


def test_prefetch_close_stops_thread():
    stopped = threading.Event()

    def endless():
        try:
            while True:
                yield 0
        finally:
            stopped.set()

    it = prefetch(endless(), depth=2)
    next(it)
    it.close()
    assert stopped.wait(2)


def test_sink_consumes_all_in_order():
    seen = []
    with Sink(seen.append, depth=2) as sink:
        for i in range(50):
            sink.put(i)
    assert seen == list(range(50))


def test_sink_error_reaches_producer():
    def consume(item):
        if item == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with Sink(consume, depth=1) as sink:
            for i in range(100):
                sink.put(i)


def test_sink_abandons_queue_when_block_fails():
    seen = []

    def slow(item):
        time.sleep(0.01)
        seen.append(item)

    with pytest.raises(RuntimeError):
        with Sink(slow, depth=4) as sink:
            for i in range(4):
                sink.put(i)
            raise RuntimeError("cancelled")
    assert len(seen) < 4
