"""One service per state folder: an exclusive ``flock`` on ``<state>/lipsyncd.pid``.

Two services on the same database would claim and render the same jobs (one result in
``outbox/`` and another, saying nothing was produced, in ``error/``). The lock file holds the
PID of the service that has it, and its modification time is the service's heartbeat: the
supervisor touches it every tick while its threads are healthy, so ``lipsyncd status`` can
tell "running and well" from "running but stuck" and from "not running". The kernel drops
the lock when the process dies however it dies (``kill -9`` included), so a stale file never
blocks a start.

Reading the lock (:func:`probe`) never creates anything: ``lipsyncd status`` run as root
before the first start must not leave root-owned files behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "lipsyncd.pid"
ACQUIRE_WAIT_S = 1.0
"""A ``status`` probing the lock holds it (shared) for microseconds; a start waits this long
for such a probe before it concludes that another service holds the lock."""


class AlreadyRunning(RuntimeError):
    """Another process holds the lock; the message names it."""


@dataclass(frozen=True)
class ServiceState:
    """What :func:`probe` found: whether a service holds the lock, its PID, and how many
    seconds ago it last reported itself healthy."""

    running: bool
    pid: int | None = None
    heartbeat_age_s: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"running": self.running, "pid": self.pid,
                "heartbeat_age_s": None if self.heartbeat_age_s is None else round(self.heartbeat_age_s, 1)}


class ServiceLock:
    """The lock a running service holds until its process ends."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our PID; :class:`AlreadyRunning` if another process has it.
        An ``OSError`` means the state folder cannot be written."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + ACQUIRE_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = _read_pid(fd)
                os.close(fd)
                who = f"pid {holder}" if holder else "another process"
                raise AlreadyRunning(
                    f"lipsyncd is already running on {self.path.parent} ({who}); one service per state "
                    f"folder: stop that one first (systemctl stop lipsyncd, or kill {holder or 'it'}), "
                    "or give this one another folders.state") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def beat(self) -> None:
        """Record that the service is alive and healthy now (the file's modification time)."""
        if self._fd is not None:
            os.utime(self._fd)

    def release(self) -> None:
        """Give the lock up (the PID file stays: it is rewritten at the next start)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def probe(state_dir: Path) -> ServiceState:
    """Is a service holding the lock on ``state_dir``? Opens the file read-only, creates nothing."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ServiceState(running=False)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            age = max(0.0, time.time() - os.fstat(fd).st_mtime)
            return ServiceState(running=True, pid=_read_pid(fd), heartbeat_age_s=age)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return ServiceState(running=False)
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
