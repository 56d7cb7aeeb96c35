"""Is the share there? The service asks before every step that touches inbox/, outbox/ or error/.

Those three folders often live on a mount (NFS, SMB, a NAS volume). When it goes away
(``umount -l``, a network cut, a NAS reboot), the paths do not vanish cleanly: they fall
through to the bare mountpoint directory on the local disk, where a naive service would fail
every job ("the audio cannot be opened") and write ``error/`` folders nobody will ever see.

The guard knows which mount each folder belongs on: the mount holding it the first time the
service saw it, recorded in ``<state>/share.json`` (local disk) so a later start, too, can
tell a share that is not mounted yet from a fresh install. A folder is *there* when it is a
folder on that mount or on one mounted below it; it is *gone* when it is missing, or when
it now lies on a mount above the recorded one (the share was unmounted and the path falls
through to the disk underneath). A sentinel file in the users' folders would have done the
same, but users see, move and delete files there; the mount table they cannot touch.

Folders are created only where their parent already lies on the expected mount, so nothing
is ever created under a bare mountpoint. :meth:`ShareGuard.check` is a few ``stat`` calls
while the folders stay on the device last seen (the mount table is read only when that
changes), so the runner can afford to ask about once a second during a render.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .config import Config
from .mounts import MOUNTINFO, Mount, mount_of, mounts, unescape

log = logging.getLogger(__name__)

RECORD_NAME = "share.json"
NOTE_PREFIX = "Waiting for the share: "
"""Start of the note on a job held back by a missing share (``lipsyncd status`` shows it)."""
FSTAB = Path("/etc/fstab")


class ShareError(RuntimeError):
    """A configured folder can never work as it is (a file, a dangling link): one line for the admin."""


def waiting_note(reason: str) -> str:
    """The note a job waiting for the share shows."""
    return f"{NOTE_PREFIX}{reason}; waiting, everything resumes by itself when it is back."


def is_waiting_note(note: str | None) -> bool:
    return bool(note) and note.startswith(NOTE_PREFIX)  # type: ignore[union-attr]


def fstab_points(fstab: Path = FSTAB) -> set[Path]:
    """Mount points /etc/fstab declares (swap and pseudo entries left out)."""
    try:
        lines = fstab.read_text().splitlines()
    except OSError:
        return set()
    points = set()
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[1].startswith("/") and fields[2] != "swap":
            points.add(Path(unescape(fields[1])))
    return points


class ShareGuard:
    """Tells whether the inbox, outbox and error folders are on their share right now."""

    def __init__(self, folders: dict[str, Path], record: Path, clock: Callable[[], float] = time.monotonic,
                 mountinfo: Path = MOUNTINFO, fstab: Path = FSTAB) -> None:
        self.folders = folders
        self.record = record
        self._clock = clock
        self._mountinfo = mountinfo
        self._fstab = fstab
        self._expected: dict[str, Path] = {}
        self._device: dict[str, int] = {}
        self._last: tuple[float, str | None] = (float("-inf"), None)
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, config: Config) -> ShareGuard:
        f = config.folders
        return cls({"inbox": f.inbox, "outbox": f.outbox, "error": f.error}, f.state / RECORD_NAME)

    def prepare(self) -> str | None:
        """At start: validate the folders, create missing ones where that is safe, learn (or
        recall) their mounts. The reason the share is not there, or None. Raises
        :class:`ShareError` for a folder path that is a file or a dangling link."""
        with self._lock:
            recorded = self._read_record()
            for name, path in self.folders.items():
                _refuse_non_folder(name, path)
                expected = recorded.get(str(path))
                if expected is None:
                    reason = self._establish(name, path)
                    if reason:
                        return reason
                else:
                    self._expected[name] = Path(expected)
            try:
                self._save()
            except OSError as exc:
                raise ShareError(f"cannot write {self.record}: {exc.strerror}; the state folder must be "
                                 "writable by the service") from None
            self._last = (float("-inf"), self._last[1])
        return self.check()

    def check(self, max_age: float = 0.0) -> str | None:
        """Why the share is not usable now (one sentence), or None. ``max_age``: seconds an
        earlier answer may be reused (the runner asks every few frames)."""
        with self._lock:
            now = self._clock()
            if now - self._last[0] <= max_age:
                return self._last[1]
            reason = None
            for name, path in self.folders.items():
                reason = self._probe(name, path)
                if reason:
                    break
            if reason != self._last[1]:
                if reason:
                    log.error("%s; intake, rendering and filing wait until it is back", reason)
                else:
                    log.info("the share is back: inbox, outbox and error are reachable again")
            self._last = (now, reason)
            return reason

    def diagnose(self) -> str | None:
        """What the service would say about the share now, from the recorded mounts, creating
        and writing nothing (``lipsyncd doctor``). Folder paths that are files or dangling links
        are left to doctor's folder checks."""
        with self._lock:
            recorded = self._read_record()
            for name, path in self.folders.items():
                if path.exists() and not path.is_dir() or path.is_symlink() and not path.exists():
                    continue
                if str(path) in recorded:
                    self._expected[name] = Path(recorded[str(path)])
                    reason = self._probe(name, path, read_only=True)
                else:
                    reason = None if path.exists() else self._unmounted_fstab_point(name, path)
                if reason:
                    return reason
        return None

    @property
    def last_reason(self) -> str | None:
        """The latest answer, without looking again (never blocks on a hung network mount)."""
        return self._last[1]

    # -- internals ------------------------------------------------------------------------

    def _probe(self, name: str, path: Path, read_only: bool = False) -> str | None:
        expected = self._expected.get(name)
        if expected is None:  # prepare() not run (tests drive parts of the service directly)
            return None
        try:
            st = path.stat()
        except FileNotFoundError:
            if read_only or not self._create_if_safe(name, path, expected):
                return self._missing(name, path, expected)
            st = path.stat()
        except OSError as exc:
            return f"the {name} folder {path} cannot be read ({exc.strerror})"
        if st.st_dev == self._device.get(name):
            return None
        mount = self._mount_of(path)
        if mount is None or not mount.point.is_relative_to(expected):
            return f"the share {expected} is not mounted ({path} lies on {mount.point if mount else '?'} instead)"
        if mount.point != expected:  # a share was mounted below the recorded one since: follow it
            log.info("%s is now on the mount %s (was %s)", path, mount.point, expected)
            self._expected[name] = mount.point
            try:
                if not read_only:
                    self._save()
            except OSError as exc:
                log.warning("cannot update %s: %s", self.record, exc.strerror)
        if not path.is_dir():
            return f"the {name} folder {path} is not a folder any more"
        self._device[name] = st.st_dev
        return None

    def _missing(self, name: str, path: Path, expected: Path) -> str:
        if expected not in {m.point for m in mounts(self._mountinfo)}:
            return f"the share {expected} is not mounted ({path} is not there)"
        return f"the {name} folder {path} is not there (moved or renamed?)"

    def _create_if_safe(self, name: str, path: Path, expected: Path) -> bool:
        """Re-create a folder someone removed, only if its parent is a folder on the expected
        mount (never under a bare mountpoint, never the mountpoint itself)."""
        if path == expected or path.is_symlink() or not path.parent.is_dir():
            return False
        parent = self._mount_of(path.parent)
        if parent is None or parent.point != expected:
            return False
        try:
            path.mkdir()
        except FileExistsError:
            return True
        except OSError as exc:
            log.warning("cannot re-create the %s folder %s: %s", name, path, exc.strerror)
            return False
        log.warning("the %s folder %s was missing; created it again", name, path)
        return True

    def _establish(self, name: str, path: Path) -> str | None:
        """First sight of this folder path: refuse to create it under a declared but unmounted
        mount point or where its parent is missing; otherwise create it and record its mount."""
        if not path.exists():
            if reason := self._unmounted_fstab_point(name, path):
                return reason
            if not path.parent.is_dir():
                return f"the folder {path.parent} does not exist: create it, or mount the share that holds it"
            try:
                path.mkdir()
            except OSError as exc:
                raise ShareError(f"folders.{name}: cannot create {path} ({exc.strerror}); create it for the "
                                 "service's user, as the README's install steps show") from None
            log.info("created the %s folder %s", name, path)
        mount = self._mount_of(path)
        self._expected[name] = mount.point if mount else Path(path.anchor)
        return None

    def _unmounted_fstab_point(self, name: str, path: Path) -> str | None:
        """A mount point /etc/fstab declares above ``path`` that is not mounted: the folder
        belongs on a share that is not there."""
        mounted = {m.point for m in mounts(self._mountinfo)}
        real = Path(os.path.realpath(path))
        for point in sorted(fstab_points(self._fstab) - mounted):
            if real.is_relative_to(point):
                return f"the share {point} is not mounted (it is in /etc/fstab); the {name} folder {path} is on it"
        return None

    def _mount_of(self, path: Path) -> Mount | None:
        return mount_of(path, mounts(self._mountinfo))

    def _read_record(self) -> dict[str, str]:
        try:
            data = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save(self) -> None:
        """Remember each folder's mount (other folder paths, from an older config, are kept)."""
        recorded = self._read_record()
        merged = {**recorded, **{str(self.folders[n]): str(p) for n, p in self._expected.items()}}
        if merged == recorded:
            return
        tmp = self.record.with_name(f".{self.record.name}.tmp")
        tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.record)


def _refuse_non_folder(name: str, path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise ShareError(f"folders.{name}: {path} is a link to {os.readlink(path)}, which does not exist; "
                         "fix the link or point the config at the real folder")
    if path.exists() and not path.is_dir():
        raise ShareError(f"folders.{name}: {path} is a file, not a folder; move it away or change folders.{name}")
