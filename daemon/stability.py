"""Has a folder finished copying? Every signal the machine gives, the quiet period last.

:class:`Readiness` takes a folder only when
1. nothing in it changed for ``watch.quiet_period`` (:class:`StabilityTracker`), or it holds the
   hand-off marker ``watch.ready_marker`` when one is configured (then only the marker counts);
2. no file in it is open for writing: inotify open/close events and /proc (:mod:`.writers`);
3. no media file in it ends in the zero bytes of a preallocated copy (:mod:`lipsyncd.engine.complete`).

The quiet period alone cannot tell a stalled writer from a finished one; the open-file evidence
can, for every writer on this machine (smbd included), however long it stalls. The zero tail
catches a preallocated copy whose writer is out of sight (another machine, through a mount).
The two heuristic signals — an inotify open whose close may have been lost, a zero tail that
might be genuine — are waived, with a warning, once the folder has held still for
``watch.max_wait``; /proc's evidence (a process holds the file open for writing now) never is.

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
from pathlib import Path, PurePosixPath

from lipsyncd.engine.complete import has_zero_tail
from lipsyncd.engine.errors import IncompleteInputError

from .config import Watch
from .jobfolder import JOB_FILES, MEDIA_SUFFIXES, is_junk, list_files
from .names import readable
from .writers import OpenFiles, ProcScan

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

    def still_for(self, folder: Path) -> float:
        """Seconds since ``folder`` last changed (0 when not tracked)."""
        watch = self._watches.get(folder)
        return 0.0 if watch is None else self._clock() - watch.changed_at

    def has_files(self, folder: Path) -> bool:
        """Whether the last snapshot of ``folder`` held any file."""
        watch = self._watches.get(folder)
        return watch is not None and bool(watch.snap)

    def forget(self, folder: Path) -> None:
        """Stop tracking ``folder`` (claimed, rejected or gone)."""
        self._watches.pop(folder, None)

    def tracked(self) -> list[Path]:
        return list(self._watches)


def find_marker(folder: Path, marker: str) -> str | None:
    """The hand-off file in ``folder``'s top level: ``marker`` in any case, or with ``.txt`` added
    (what Explorer's "New text document" makes of it; not for job.yaml, which must be itself);
    None when absent."""
    wanted = {marker.casefold()} if marker.lower() in JOB_FILES else {marker.casefold(), f"{marker}.txt".casefold()}
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    return next((n for n in sorted(names) if n.casefold() in wanted and (folder / n).is_file()), None)


class Readiness:
    """The claim decision for one inbox folder, from all the signals (see the module docstring)."""

    def __init__(self, watch: Watch, tracker: StabilityTracker, open_files: OpenFiles | None = None,
                 proc: ProcScan | None = None) -> None:
        self.watch = watch
        self.tracker = tracker
        self.open_files = open_files
        self.proc = proc if proc is not None else ProcScan()
        self._told: dict[Path, str] = {}

    def ready(self, folder: Path) -> bool:
        """Take a new snapshot and decide; a reason for waiting is logged when it changes."""
        stable = self.tracker.check(folder)
        if self.watch.ready_marker is not None:
            if find_marker(folder, self.watch.ready_marker) is None:
                return self._wait(folder, f"waiting for its {self.watch.ready_marker} file (watch.ready_marker)",
                                  waivable=False)
            stable = self.tracker.has_files(folder)  # the user said it is complete: no quiet period
        if not stable:
            return False
        writers = self.proc.open_for_writing([folder])
        if writers:
            path, who = next(iter(sorted(writers.items())))
            return self._wait(folder, f"{self._name(folder, path)} is open for writing by {who}", waivable=False)
        if self.open_files is not None:
            written = self.open_files.being_written(folder)
            if written:
                return self._wait(folder, f"{self._name(folder, written[0])} is still open for writing "
                                          "(no close seen yet)", waivable=True)
        if self.watch.ready_marker is None:
            for rel in list_files(folder):
                if is_junk(rel, self.watch.ignore) or PurePosixPath(rel).suffix.lower() not in MEDIA_SUFFIXES:
                    continue  # ._clip.mp4 (a Mac's AppleDouble file) is mostly zeros
                if has_zero_tail(folder / rel):
                    return self._wait(folder, f"{readable(rel)} ends in zero bytes, as a preallocated copy "
                                              "does before it is filled in", waivable=True)
        self._told.pop(folder, None)
        return True

    def forget(self, folder: Path) -> None:
        """Stop tracking ``folder`` (claimed, rejected or gone)."""
        self.tracker.forget(folder)
        self._told.pop(folder, None)
        if self.open_files is not None:
            self.open_files.forget(folder)

    def _wait(self, folder: Path, reason: str, waivable: bool) -> bool:
        """Not ready because of ``reason``; True instead for a heuristic reason once the folder has
        held still for ``watch.max_wait`` (a lost close event or a genuine zero tail must not hold
        a folder forever: the engine checks the file again before and while it renders)."""
        still = self.tracker.still_for(folder)
        if waivable and still >= self.watch.max_wait:
            log.warning("%s: %s, but nothing changed for %.0f s; taking it", readable(folder.name), reason, still)
            self._told.pop(folder, None)
            return True
        if self._told.get(folder) != reason:
            self._told[folder] = reason
            log.info("%s: not taken yet: %s", readable(folder.name), reason)
        return False

    @staticmethod
    def _name(folder: Path, path: str) -> str:
        """``path`` relative to ``folder`` (inotify's paths) or to its real path (/proc's)."""
        for base in (folder, Path(os.path.realpath(folder))):
            if Path(path).is_relative_to(base):
                return readable(Path(path).relative_to(base).as_posix())
        return readable(Path(path).name)


@dataclass
class _Hold:
    snap: Snapshot
    since: float
    error: IncompleteInputError


class InputWait:
    """Jobs whose input the engine found incomplete (still being copied into a folder that was
    already claimed: the writer's open handle follows the file into the work area).

    Such a job stays queued; :meth:`verdict` says ``"run"`` once its input folder has changed
    since the failure and then held still for the quiet period, ``"wait"`` meanwhile, and
    ``"give up"`` when nothing changed for ``max_wait`` (the file is cut short for good; then
    :meth:`give_up` says why).
    """

    def __init__(self, quiet_period: float, max_wait: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_wait = max_wait
        self._clock = clock
        self._tracker = StabilityTracker(quiet_period, max_wait, clock)
        self._holds: dict[int, _Hold] = {}

    def hold(self, job_id: int, folder: Path, error: IncompleteInputError) -> None:
        """Remember the input folder as the engine found it incomplete."""
        self._holds[job_id] = _Hold(snapshot(folder), self._clock(), error)
        self._tracker.forget(folder)

    def verdict(self, job_id: int, folder: Path) -> str:
        """``"run"`` (not held, or changed and settled: the hold is dropped), ``"wait"`` or ``"give up"``."""
        held = self._holds.get(job_id)
        if held is None:
            return "run"
        if snapshot(folder) == held.snap:
            return "wait" if self._clock() - held.since < self.max_wait else "give up"
        if not self._tracker.check(folder):
            return "wait"
        del self._holds[job_id]
        self._tracker.forget(folder)
        return "run"

    def give_up(self, job_id: int) -> str:
        """Drop the hold; the reason to file the job as failed with."""
        error = self._holds.pop(job_id).error
        return (f"The file '{error.name}' looks incomplete: {error.detail}. It did not change for "
                f"{self.max_wait / 60:.0f} minutes, so it is not waited for any longer: copy the complete "
                "file into the folder and drop the folder into the inbox again.")
