"""Browser uploads become ordinary job folders in the inbox, so the web and the share are one queue.

An upload is written under ``inbox/.uploading/<id>/job/`` (a dot folder: the watcher ignores
it), file by file as the bytes arrive, with no copy in a temporary directory elsewhere. When
the browser says it is complete, the folder gets its ``job.yaml`` (the options chosen on the
page) and is renamed into the inbox under a free, Windows-safe name: one atomic step on the
same file system, so intake never sees a half-written job. It then waits the usual quiet
period and is claimed like any folder dropped on the share.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from ..names import unique_in_dir, windows_safe

UPLOADING = ".uploading"
_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_DEPTH = 8
STALE_S = 24 * 3600.0


class UploadError(ValueError):
    """The upload cannot be accepted; the message says why, for the person uploading."""


def start(inbox: Path) -> str:
    """A new, empty upload; its id. Uploads abandoned for a day (the browser was closed) go."""
    discard_stale(inbox)
    upload_id = secrets.token_hex(8)
    (inbox / UPLOADING / upload_id / "job").mkdir(parents=True)
    return upload_id


def folder(inbox: Path, upload_id: str) -> Path:
    """The job folder being uploaded under ``upload_id``."""
    path = inbox / UPLOADING / upload_id / "job"
    if not _ID.match(upload_id) or not path.is_dir():
        raise UploadError("This upload is unknown or already finished; start again from the upload page.")
    return path


def target(inbox: Path, upload_id: str, rel: str) -> Path:
    """Where the uploaded file ``rel`` (may hold sub-folders) is written, names made safe."""
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or len(parts) > MAX_DEPTH:
        raise UploadError(f"{rel!r} is not a file name that can be uploaded.")
    path = folder(inbox, upload_id).joinpath(*(windows_safe(p) for p in parts))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def finish(inbox: Path, upload_id: str, name: str, options: dict[str, Any]) -> str:
    """Write job.yaml (unless one was uploaded) and move the folder into the inbox; its name there."""
    source = folder(inbox, upload_id)
    if not any(p.is_file() for p in source.iterdir()):
        raise UploadError("Nothing was uploaded: add one audio and at least one video or photo.")
    job_yaml = source / "job.yaml"
    if options and not job_yaml.exists():
        job_yaml.write_text(yaml.safe_dump(options, allow_unicode=True, sort_keys=False), encoding="utf-8")
    final = unique_in_dir(inbox, windows_safe(name.strip() or "upload", fallback="upload"))
    source.rename(inbox / final)
    shutil.rmtree(source.parent, ignore_errors=True)
    return final


def discard_stale(inbox: Path) -> None:
    """Remove uploads nothing was written to for ``STALE_S`` (never finished: not a job yet)."""
    now = time.time()
    root = inbox / UPLOADING
    for upload in root.iterdir() if root.is_dir() else []:
        if _ID.match(upload.name) and now - _last_write(upload) > STALE_S:
            shutil.rmtree(upload, ignore_errors=True)


def _last_write(folder: Path) -> float:
    return max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)
