"""The mount table: which mount, and which kind of file system, holds a path.

Three places ask: the share guard (is the share still mounted where it was?), the config's
``watch.quiet_period: auto`` (is the inbox on a network mount?) and ``lipsyncd doctor`` (is the
database on a local disk?). They read the same table, ``/proc/self/mountinfo``, here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afpfs")
"""File system types whose writers may be other machines (no inotify events, no /proc evidence)."""


@dataclass(frozen=True)
class Mount:
    point: Path
    fstype: str
    source: str


def unescape(field: str) -> str:
    """Mount table fields escape space, tab, newline and backslash as octal (``\\040``)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts(mountinfo: Path = MOUNTINFO) -> list[Mount]:
    """The mounts this process sees, in mount order (a later one may cover an earlier one)."""
    found = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 3 or len(fields) < 5:
            continue
        found.append(Mount(Path(unescape(fields[4])), fields[dash + 1], unescape(fields[dash + 2])))
    return found


def mount_of(path: Path, table: Iterable[Mount] | None = None) -> Mount | None:
    """The mount holding ``path`` (resolved as far as it exists): the deepest mount point above
    it, the last mounted where several share one point."""
    target = Path(os.path.realpath(path))
    best: Mount | None = None
    for mount in mounts() if table is None else table:
        if target.is_relative_to(mount.point) and (best is None or len(mount.point.parts) >= len(best.point.parts)):
            best = mount
    return best


def filesystem_type(path: Path) -> str | None:
    """The type of the file system holding ``path`` (``ext4``, ``cifs``, ...), None if unknown."""
    try:
        mount = mount_of(path)
    except OSError:
        return None
    return mount.fstype if mount is not None else None
