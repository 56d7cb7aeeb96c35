"""Has a folder finished copying? Only when nothing in it changed for a quiet period.

A snapshot is the (size, mtime) of every file, junk included: a growing ``*.part`` means a
copy is still running even though the part file itself is never used. Size alone is not
enough — Windows Explorer sets a file's final size first and fills it in afterwards — so the
modification time (in nanoseconds) must hold still too. The clock is injectable so tests can
step time instead of sleeping.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Snapshot = frozenset[tuple[str, int, int]]


def snapshot(folder: Path) -> Snapshot:
    """(relative path, size, mtime_ns) of every regular file below ``folder``; empty if it vanished."""
    entries = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:  # deleted between listing and stat: the folder is changing
                continue
            entries.append((os.path.relpath(path, folder), st.st_size, st.st_mtime_ns))
    return frozenset(entries)


@dataclass
class _Watch:
    snap: Snapshot
    changed_at: float
    first_seen: float
    warned: bool = False


class StabilityTracker:
    """Remembers each candidate folder's last snapshot and when it last changed."""

    def __init__(self, quiet_period: float, max_wait: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet_period = quiet_period
        self.max_wait = max_wait
        self._clock = clock
        self._watches: dict[Path, _Watch] = {}

    def check(self, folder: Path) -> bool:
        """Take a new snapshot; True once it has held still for the quiet period (and is not empty).

        A folder that keeps changing past ``max_wait`` is logged once and still waited for:
        picking up a half-copied video would fail it for a reason the user never caused.
        """
        now = self._clock()
        snap = snapshot(folder)
        watch = self._watches.get(folder)
        if watch is None or watch.snap != snap:
            if watch is None:
                watch = self._watches[folder] = _Watch(snap, now, now)
            watch.snap, watch.changed_at = snap, now
            if not watch.warned and now - watch.first_seen > self.max_wait:
                watch.warned = True
                log.warning("%s: still changing after %.0f s; waiting for the copy to finish", folder.name,
                            now - watch.first_seen)
            return False
        return bool(snap) and now - watch.changed_at >= self.quiet_period

    def forget(self, folder: Path) -> None:
        """Stop tracking ``folder`` (claimed, rejected or gone)."""
        self._watches.pop(folder, None)

    def tracked(self) -> list[Path]:
        return list(self._watches)
