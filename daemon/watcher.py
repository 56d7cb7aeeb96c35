"""Hints that something changed in the inbox: watchdog events, inotify or polling.

Events say *which top-level folder* to look at sooner, and (inotify only) which files are open
for writing (:class:`~.writers.OpenFiles`, one of the signals :mod:`.stability` weighs); they
are never trusted to be complete. inotify sees nothing another machine writes to an NFS or SMB
mount, so ``watch.mode: polling`` switches to stat-based polling, and the intake loop rescans the whole
inbox at start and every ``watch.rescan_interval`` in every mode, so a lost event delays a job
but never loses it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .writers import OpenFiles

log = logging.getLogger(__name__)


def top_level_name(inbox: Path, path: str | bytes) -> str | None:
    """The inbox entry ``path`` lies in, or None for the inbox itself and hidden (dot) entries,
    which are the service's own work and temp folders."""
    if isinstance(path, bytes):
        path = path.decode(errors="surrogateescape")
    try:
        parts = Path(path).relative_to(inbox).parts
    except ValueError:
        return None
    if not parts or parts[0].startswith("."):
        return None
    return parts[0]


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: InboxWatcher, open_files: OpenFiles | None) -> None:
        self._watcher = watcher
        self._open_files = open_files

    def on_any_event(self, event: FileSystemEvent) -> None:
        if self._open_files is not None:
            self._open_files.record(event)
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self._watcher.hint(path)


class InboxWatcher:
    """Collects the names of inbox folders that changed, from a watchdog observer."""

    def __init__(self, inbox: Path, mode: str, poll_interval: float) -> None:
        self.inbox = inbox
        self.mode = mode
        self.poll_interval = poll_interval
        self._names: set[str] = set()
        self.open_files = OpenFiles()
        """Files open for writing, as inotify reports opens and closes (empty when polling)."""
        self._lock = threading.Lock()
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        """Start observing. ``auto`` uses inotify and falls back to polling when inotify is
        unavailable (for example the per-user watch limit is reached)."""
        try:
            self._observer = self._start(self.mode == "polling")
        except OSError as exc:
            if self.mode != "auto":
                raise
            log.warning("inotify unavailable (%s); polling %s every %.0f s instead", exc, self.inbox,
                        self.poll_interval)
            self._observer = self._start(polling=True)

    def _start(self, polling: bool) -> BaseObserver:
        observer = PollingObserver(timeout=self.poll_interval) if polling else Observer()
        # Polling compares snapshots: its "modified" has no close to follow it, so only inotify's
        # events feed the open-file bookkeeping.
        observer.schedule(_Handler(self, None if polling else self.open_files), str(self.inbox), recursive=True)
        observer.daemon = True
        observer.start()
        log.info("watching %s (%s)", self.inbox, "polling" if polling else "inotify")
        return observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)

    def hint(self, path: str | bytes) -> None:
        name = top_level_name(self.inbox, path)
        if name is not None:
            with self._lock:
                self._names.add(name)

    def take(self) -> set[str]:
        """The folder names hinted since the last call."""
        with self._lock:
            names, self._names = self._names, set()
        return names
