"""Helpers for the executor tests: the runner in a thread with fake-engine workers, and probes."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Self

from daemon_helpers import make_job
from lipsyncd.daemon.config import Config
from lipsyncd.daemon.executor import EngineSpec
from lipsyncd.daemon.intake import Intake
from lipsyncd.daemon.runner import Runner
from lipsyncd.daemon.store import Store
from lipsyncd.daemon.watcher import InboxWatcher

HERE = Path(__file__).parent


def with_fakes_on_path(environ: dict[str, str] | None = None) -> str:
    """A PYTHONPATH under which worker processes can import ``daemon_fakes``."""
    environ = os.environ if environ is None else environ
    return os.pathsep.join(filter(None, [str(HERE), environ.get("PYTHONPATH")]))


class Service:
    """The runner in a thread, as the service runs it, with fake-engine workers."""

    def __init__(self, cfg: Config, frame_delay: float) -> None:
        from daemon_fakes import FakeEngine

        self.cfg = cfg
        self.stop = threading.Event()
        spec = EngineSpec("daemon_fakes:FakeEngine", {"frame_delay": frame_delay})
        self.runner = Runner(cfg, FakeEngine, self.stop, worker_engine=spec)
        self.thread = threading.Thread(target=self.runner.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def queue_job(cfg: Config, store: Store, name: str, videos: dict[str, bytes]) -> int:
    make_job(cfg.folders.inbox, name, {"speech.wav": b"RIFF speech", **videos})
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    ids = intake.tick(store) + intake.tick(store)
    assert len(ids) == 1
    return ids[0]


def worker_pids() -> list[int]:
    """This test process's worker processes (children running lipsyncd.daemon.worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"lipsyncd.daemon.worker" in cmdline:
            pids.append(int(entry.name))
    return pids


def running(store_path: Path) -> int:
    db = Store(store_path)
    try:
        return sum(t.state == "running" and t.progress > 0 for job in db.jobs_in("running") for t in db.tasks(job.id))
    finally:
        db.close()



def outbox_files(cfg: Config, job: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (cfg.folders.outbox / job).iterdir() if p.suffix == ".mp4"}
