"""The real service (fake engine) loses its share mid-run: a real ``umount -l``, or the share
folder renamed away where mounting is refused. Nothing may fail, nothing may be lost, nothing
may be written under the bare mountpoint, and everything must finish once the share is back.

The mount variant needs root (CI runs the tests as root); in a container that refuses mounts
it says so and the rename variant still runs.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from daemon_helpers import make_job, write_config, wait_for
from test_daemon_process import files_under, query, start, stop_service

JOBS = {name: {"speech.wav": f"RIFF {name}".encode(), "a.mp4": b"first video", "b.mp4": b"second video"}
        for name in ("one", "two", "three")}


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


class Outage:
    """Takes the share away and brings it back; ``bare`` is what the service's paths show meanwhile."""

    def __init__(self, root: Path, kind: str) -> None:
        self.kind = kind
        self.share = root / "share"  # the path in the config
        self.store = root / ("backing" if kind == "umount" else "away")  # where the data really is
        self.share.mkdir()
        if kind == "umount":
            self.store.mkdir()
            try:
                mount("--bind", str(self.store), str(self.share))
            except (OSError, subprocess.CalledProcessError) as exc:
                pytest.skip(f"mounting is refused here ({exc}); the rename variant covers this machine")

    def begin(self) -> None:
        if self.kind == "umount":
            subprocess.run(["umount", "-l", str(self.share)], check=True)
        else:
            self.share.rename(self.store)

    def end(self) -> None:
        if self.kind == "umount":
            mount("--bind", str(self.store), str(self.share))
        else:
            self.store.rename(self.share)

    def bare_contents(self) -> list[str]:
        """What lies at the config's path while the share is away (must stay nothing)."""
        if self.kind == "umount":
            return sorted(p.name for p in self.share.iterdir())
        return ["<share path re-created>"] if self.share.exists() else []

    def cleanup(self) -> None:
        if self.kind == "umount":
            subprocess.run(["umount", "-l", str(self.share)], capture_output=True)


@pytest.fixture(params=["umount", "rename"])
def outage(request, tmp_path: Path):
    o = Outage(tmp_path, request.param)
    yield o
    o.cleanup()


WAITING = ("queued", "filing")
"""A job caught by the outage waits in the queue (interrupted) or, if its last video just
finished, with its results not filed yet; never failed."""


def states(db: Path) -> list[tuple]:
    return query(db, "SELECT name, state, note, error FROM jobs ORDER BY id")


def test_a_share_outage_mid_run_fails_nothing_writes_nothing_and_resumes(tmp_path, outage):
    share = outage.share
    config = write_config(tmp_path, folders={k: str(share / k) for k in ("inbox", "outbox", "error")},
                          status={"folder": str(share)})  # the status files at the share's root, too
    db = tmp_path / "state" / "lipsyncd.sqlite3"
    for name, files in JOBS.items():
        make_job(share / "inbox", name, files)
    proc = start(config, frame_delay=0.05)
    try:
        wait_for(lambda: len(query(db, "SELECT 1 FROM jobs WHERE state = 'queued'")) == 2
                 and bool(query(db, "SELECT 1 FROM tasks WHERE state = 'running' AND progress > 0")),
                 "all jobs claimed and one rendering")
        outage.begin()
        wait_for(lambda: all(s[1] in WAITING and (s[2] or "").startswith("Waiting for the share: ")
                             for s in states(db)), "every job to wait for the share", timeout=10)
        if outage.kind == "umount":
            assert f"the share {share} is not mounted" in states(db)[0][2]
        for _ in range(3):  # the service keeps looking; it must keep its hands off meanwhile
            assert outage.bare_contents() == [] and proc.poll() is None
            time.sleep(0.4)
        assert all(s[1] in WAITING and s[3] is None for s in states(db))
        assert sorted(p.name for p in (outage.store / "error").iterdir()) == []
        assert sorted(p.name for p in (outage.store / "outbox").iterdir()) == []
        outage.end()
        wait_for(lambda: [s[1] for s in states(db)] == ["done"] * 3, "every job to finish", timeout=30)
        assert stop_service(proc) == 0
    finally:
        proc.kill()
    assert all(note is None for _, _, note, _ in states(db))
    for name, files in JOBS.items():
        out = share / "outbox" / name
        assert files_under(out / "input") == files  # every input, exactly once
        assert (out / "a.mp4").read_bytes().startswith(b"LIPSYNCED") and (out / "b.mp4").is_file()
    assert list((share / "error").iterdir()) == []
    assert list((share / "inbox" / ".processing").iterdir()) == []
    assert query(db, "SELECT min(attempt), max(attempt) FROM jobs") in ([(1, 2)], [(1, 1)])  # rerun at most once


def test_a_service_started_while_the_share_is_away_waits_and_creates_nothing(tmp_path, outage):
    share = outage.share
    config = write_config(tmp_path, folders={k: str(share / k) for k in ("inbox", "outbox", "error")})
    db = tmp_path / "state" / "lipsyncd.sqlite3"
    proc = start(config, frame_delay=0)  # the first start learns where the folders belong
    try:
        wait_for(lambda: db.exists() and (share / "inbox" / ".processing").is_dir(), "the service to start")
        assert stop_service(proc) == 0
    finally:
        proc.kill()
    make_job(share / "inbox", "later")
    outage.begin()
    proc = start(config, frame_delay=0)
    try:
        wait_for(lambda: b"intake, rendering and filing wait" in (tmp_path / "service.log").read_bytes(),
                 "the service to say it waits for the share")
        assert outage.bare_contents() == [] and proc.poll() is None
        outage.end()
        wait_for(lambda: query(db, "SELECT state FROM jobs") == [("done",)], "the job to run once the share is back")
        assert stop_service(proc) == 0
    finally:
        proc.kill()
    assert files_under(share / "outbox" / "later" / "input") == {"speech.wav": b"RIFF speech", "face.mp4": b"video bytes"}
