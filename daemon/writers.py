"""Is something still writing a file in the inbox? Two kinds of evidence, both from the kernel.

* **inotify open/close bookkeeping** (:class:`OpenFiles`), fed by the watcher's events: a file
  written to since its last close-after-write, or created and still open, is being written.
  smbd, NFS's server and local copies all write locally, so this sees every writer that goes
  through *this* machine, for as long as it holds the file open — a Wi-Fi client stalling for
  minutes keeps its file open on the server the whole time.
  One gap: a file opened within milliseconds of its brand-new folder's creation, before the
  watch on that folder is in place, is seen only from its next write on.
* **/proc** (:class:`ProcScan`): every process's open file descriptors whose
  ``fdinfo`` flags say write or read-write. It also sees writers that opened a file before the
  service started, but only in processes the service may inspect: all of them as root, only
  its own user's otherwise (smbd's are then out of sight, and inotify covers them).

Why not a write-lease probe (``fcntl(F_SETLEASE, F_RDLCK)``, refused while anyone has the file
open for writing)? It works only on files the service owns (or with ``CAP_LEASE``), so never on
files a Samba user wrote; while held it makes the next writer's ``open`` block until the lease
is broken; and breaking it sends the holder SIGIO, which kills a process that does not handle
it. Reading /proc has none of these hazards.

Neither signal sees a writer on another machine writing through an NFS or SMB *mount*: for
those the quiet period (:mod:`.stability`) is the last line.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
)

log = logging.getLogger(__name__)

PROC = Path("/proc")


class _Open:
    """What inotify said about one path since its last close after writing."""

    __slots__ = ("created", "modified", "opens")

    def __init__(self) -> None:
        self.opens = 0
        self.created = False
        self.modified = False

    @property
    def being_written(self) -> bool:
        return self.modified or (self.created and self.opens > 0)


class OpenFiles:
    """Open/close bookkeeping from inotify events (thread-safe: the observer thread records,
    the intake thread asks).

    A path is *being written* when it was modified and its close-after-write has not come yet
    (every write through a file descriptor is followed by ``IN_CLOSE_WRITE`` when it is closed),
    or when it was created and is still open (a copy stalled before its first byte). This holds
    even where the open itself was missed (a file created in a new folder before the watch on
    that folder was in place). Readers (a thumbnailer, an antivirus scan, this service's own
    checks) open and close without writing and never hold a folder. A lost event is not waited
    for forever: the caller waives this evidence once the folder has held still for
    ``watch.max_wait`` (see :mod:`.stability`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, _Open] = {}

    def record(self, event: FileSystemEvent) -> None:
        """Account for one watchdog event; events of other kinds are ignored."""
        if event.is_directory:
            return
        src = os.fsdecode(event.src_path)
        with self._lock:
            entry = self._files.get(src)
            if isinstance(event, FileOpenedEvent):
                self._entry(src).opens += 1
            elif isinstance(event, FileCreatedEvent):
                self._entry(src).created = True
            elif isinstance(event, FileModifiedEvent):
                self._entry(src).modified = True
            elif isinstance(event, (FileClosedEvent, FileClosedNoWriteEvent)) and entry is not None:
                entry.opens = max(0, entry.opens - 1)
                if isinstance(event, FileClosedEvent):
                    entry.modified = False
                if entry.opens == 0 and not entry.modified:
                    del self._files[src]
            elif isinstance(event, FileDeletedEvent):
                self._files.pop(src, None)
            elif isinstance(event, FileMovedEvent) and entry is not None:
                del self._files[src]
                if event.dest_path:
                    self._files[os.fsdecode(event.dest_path)] = entry

    def _entry(self, path: str) -> _Open:
        return self._files.setdefault(path, _Open())

    def forget(self, folder: Path) -> None:
        """Drop what is known about files below ``folder`` (claimed or gone)."""
        prefix = os.path.join(str(folder), "")
        with self._lock:
            for path in [p for p in self._files if p.startswith(prefix)]:
                del self._files[path]

    def being_written(self, folder: Path) -> list[str]:
        """Paths below ``folder`` being written (sorted)."""
        prefix = os.path.join(str(folder), "")
        with self._lock:
            return sorted(path for path, entry in self._files.items()
                          if entry.being_written and path.startswith(prefix))


_O_ACCMODE = 0o3
_WRITE_MODES = (os.O_WRONLY, os.O_RDWR)


class ProcScan:
    """Which files below some folders are open for writing, by any process this one may inspect."""

    def __init__(self, proc: Path = PROC) -> None:
        self._proc = proc
        self._told_partial = False

    def open_for_writing(self, folders: list[Path]) -> dict[str, str]:
        """{path: "<command> (pid N)"} for every file below ``folders`` open for writing.

        Processes whose descriptors cannot be read (another user's, without root) are skipped;
        that the check is then partial is logged once.
        """
        prefixes = tuple(os.path.join(os.path.realpath(f), "") for f in folders)
        found: dict[str, str] = {}
        hidden = 0
        try:
            pids = [entry for entry in os.listdir(self._proc) if entry.isdigit()]
        except OSError:
            return found  # no /proc (a container without it): nothing to learn here
        for pid in pids:
            fd_dir = self._proc / pid / "fd"
            try:
                fds = os.listdir(fd_dir)
            except PermissionError:
                hidden += 1
                continue
            except OSError:  # the process ended meanwhile
                continue
            for fd in fds:
                try:
                    target = os.readlink(fd_dir / fd)
                except OSError:
                    continue
                if not target.startswith(prefixes) or target.endswith(" (deleted)") or not self._writable(pid, fd):
                    continue
                found[target] = f"{self._command(pid)} (pid {pid})"
        if hidden and not self._told_partial:
            self._told_partial = True
            log.info("open-file check: %d processes of other users cannot be inspected without root; "
                     "files they write are detected by inotify and the quiet period instead", hidden)
        return found

    def _writable(self, pid: str, fd: str) -> bool:
        try:
            text = (self._proc / pid / "fdinfo" / fd).read_text()
        except OSError:
            return False
        for line in text.splitlines():
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & _O_ACCMODE in _WRITE_MODES
        return False

    def _command(self, pid: str) -> str:
        try:
            return (self._proc / pid / "comm").read_text().strip() or "?"
        except OSError:
            return "?"
