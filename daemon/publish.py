"""Putting folders in place so that nobody ever sees half of one, on one file system or across two.

A result folder is built under a hidden temporary name next to its destination and renamed
into place in one step, so ``outbox/`` only ever shows complete folders. Files get there by
hard link when source and destination share a file system (instant, and the source stays
whole until the caller deletes it after *everything* is filed), or else by copy, fsync and a
read-back checksum ("copy-verify-delete": inbox and outbox may be different mounts). Nothing
here deletes a source; the caller does that once every destination is in place.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .jobfolder import file_sha256, list_files

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TEMP_PREFIX = ".lipsyncd-"
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EACCES}
"""Why ``os.link`` may refuse where a copy still works: another file system, or a share
(SMB without unix extensions, some NAS) that has no hard links."""


class PublishError(OSError):
    """A folder could not be put in place; the message says where, why and what to do."""


@dataclass(frozen=True)
class Entry:
    """One file of a folder to publish: copied from ``source``, or written from ``text``."""

    relpath: str
    source: Path | None = None
    text: str | None = None


def publish_dir(entries: Iterable[Entry], final: Path) -> None:
    """Create folder ``final`` holding ``entries``, all at once. On any error nothing is left
    behind at the destination and :class:`PublishError` says what to do. ``final``'s parent
    must exist (:mod:`share` creates the outbox and error folders, only where that is safe)."""
    tmp = final.parent / f"{TEMP_PREFIX}{secrets.token_hex(4)}.tmp"
    try:  # the destination's parent must exist: never re-created under a share's bare mountpoint
        tmp.mkdir()
        for entry in entries:
            target = tmp.joinpath(*PurePosixPath(entry.relpath).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.source is not None:
                transfer_file(entry.source, target)
            else:
                _write_text(target, entry.text or "")
        _fsync_dir(tmp)
        if final.exists():  # never merge into or replace a folder someone else made meanwhile
            raise FileExistsError(errno.EEXIST, "already exists", str(final))
        os.rename(tmp, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PublishError(exc.errno, describe(exc, final.parent)) from exc


def transfer_file(src: Path, dst: Path) -> None:
    """Make ``dst`` (which must not exist) hold ``src``'s bytes; ``src`` is left as it is.
    A symbolic link is recreated as the same link, never followed."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
        return
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
    copy_verified(src, dst)


def copy_verified(src: Path, dst: Path) -> None:
    """Copy, flush to disk, then read the copy back: a short or corrupted copy is an error,
    never a silent partial move."""
    expected = hashlib.sha256()
    with src.open("rb") as fin, dst.open("xb") as fout:
        _copy_data(fin, fout, expected)
        fout.flush()
        os.fsync(fout.fileno())
    if file_sha256(dst) != expected.hexdigest():
        raise OSError(errno.EIO, "the copy read back differs from the original", str(dst))
    try:
        shutil.copystat(src, dst)
    except OSError:  # some shares refuse timestamps or modes; the content is what matters
        pass


def _copy_data(fin: BinaryIO, fout: BinaryIO, digest: hashlib._Hash) -> None:
    while chunk := fin.read(CHUNK):
        digest.update(chunk)
        fout.write(chunk)


def move_dir(src: Path, final: Path, skip: Iterable[str] = ()) -> None:
    """Move folder ``src`` to ``final`` (a rename, or publish-then-delete across file systems)."""
    try:
        os.rename(src, final)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise PublishError(exc.errno, describe(exc, final.parent)) from exc
    skipped = set(skip)
    publish_dir([Entry(rel, source=src / rel) for rel in list_files(src) if rel not in skipped], final)
    remove_tree(src)


def remove_tree(path: Path) -> None:
    """Delete a folder whose contents are safely elsewhere; a failure is logged, not fatal."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


def describe(exc: OSError, where: Path) -> str:
    """Plain words for a file-system error while writing into ``where``."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return (f"Not enough free space in {where} to write the results. "
                "Free some space there, then run `lipsyncd retry` for this job.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"No permission to write in {where} ({exc.strerror}). Give the lipsyncd service's user "
                "write access to that folder (see the README's NAS guide), then run `lipsyncd retry`.")
    return f"Could not write to {where}: {exc.strerror or exc}. Fix the folder, then run `lipsyncd retry`."


def _write_text(path: Path, text: str) -> None:
    with path.open("x", encoding="utf-8", newline="\r\n") as fh:  # CRLF: Notepad on old Windows, too
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename durable; some network file systems cannot open folders, which is fine."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
