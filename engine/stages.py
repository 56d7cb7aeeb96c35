"""Two small threading primitives that let pipeline stages overlap with bounded memory.

``prefetch`` runs a producer (decode) ahead of its consumer in a thread; ``Sink`` runs a consumer
(blend + encode) behind its producer. Both hold at most ``depth`` items, so a slow stage makes
the others wait instead of piling frames up in RAM, and both re-raise a worker's exception in
the calling thread, so an error anywhere ends the render with that error, not a hang.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()
_POLL_S = 0.1


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int) -> Generator[T, None, None]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the caller.

    Closing the returned generator (or leaving a ``for`` loop over it early) stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            put(_Failure(error))

    thread = threading.Thread(target=work, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class Sink(Generic[T]):
    """Feed items to ``consume`` in a background thread through a queue of ``depth`` items.

    Use as a context manager: leaving the block normally waits for the queue to drain; leaving
    it with an exception abandons what is queued. ``put`` raises the worker's exception as soon
    as it is known.
    """

    def __init__(self, consume: Callable[[T], None], depth: int) -> None:
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._work, name="sink", daemon=True)

    def __enter__(self) -> Sink[T]:
        self._thread.start()
        return self

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END or self._abandon.is_set():
                return
            try:
                self._consume(item)
            except BaseException as error:
                self._error = error
                self._abandon.set()
                return

    def put(self, item: T) -> None:
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._abandon.set()
        while self._thread.is_alive():
            try:
                self._queue.put(_END, timeout=_POLL_S)
                break
            except queue.Full:
                if self._abandon.is_set():
                    _drain(self._queue)
        self._thread.join()
        if exc_type is None:
            self._raise_if_failed()


def _drain(q: queue.Queue) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
