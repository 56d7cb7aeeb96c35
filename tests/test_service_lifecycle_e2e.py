"""The service as a process with the real engine: no dependence on ``$HOME``, and a SIGTERM in
the middle of a CPU render (torch's threads busy) that exits 0 in time with the job queued."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml

from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from media_tools import write_wav

pytestmark = pytest.mark.slow
SHUTDOWN_TIMEOUT = 2.0
SITE_PACKAGES = sysconfig.get_paths()["purelib"]


def service_command() -> list[str]:
    """``lipsyncd run`` where nothing but the service's own folders can be written: the
    installed packages are mounted read-only in a private mount namespace, as they are for a
    service user, so no library can cache next to its source (numba, for one, then falls back
    to ``$HOME``). Where mount namespaces are refused, the packages stay writable and the test
    still proves a render needs no ``$HOME``."""
    run = [sys.executable, "-c", "from lipsyncd.daemon.cli import main; main()", "run"]
    read_only = f"mount --bind -o ro '{SITE_PACKAGES}' '{SITE_PACKAGES}'"
    if not shutil.which("unshare") or subprocess.run(["unshare", "--mount", "sh", "-c", read_only],
                                                     capture_output=True).returncode != 0:
        return run
    return ["unshare", "--mount", "sh", "-c", f'{read_only} && exec "$@"', "sh", *run]


def query(db: Path, sql: str) -> list[tuple]:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        assert proc.poll() is None, f"service exited early with {proc.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def drop_job(root: Path, name: str, speech: Path, seconds: float, face_clip: Path) -> None:
    staging = root / "staging" / name
    staging.mkdir(parents=True)
    write_wav(staging / "speech.wav", decode_audio(speech)[: int(seconds * SAMPLE_RATE)])
    (staging / "face.mp4").write_bytes(face_clip.read_bytes())
    staging.rename(root / "inbox" / name)


def test_unwritable_home_renders_and_sigterm_mid_render_exits_0_with_the_job_queued(
        tmp_path: Path, models_dir: Path, face_clip: Path, speech_file: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "folders": {k: str(tmp_path / k) for k in ("inbox", "outbox", "error", "state")},
        "watch": {"mode": "polling", "poll_interval": 0.1, "rescan_interval": 1, "quiet_period": 0.3},
        "service": {"progress_interval": 0.2, "shutdown_timeout": SHUTDOWN_TIMEOUT},
        "engine": {"models_dir": str(models_dir), "device": "cpu", "cache_dir": str(tmp_path / "cache"),
                   "defaults": {"batch_size": 32}},
    }))
    home = tmp_path / "home-is-a-file"  # nothing can be created under it, not even by root
    home.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "TORCH_HOME",
                                                             "MPLCONFIGDIR")}
    env.update(HOME=str(home), LIPSYNCD_CONFIG=str(config), PYTHONUNBUFFERED="1")
    (tmp_path / "inbox").mkdir()
    db = tmp_path / "state" / "lipsyncd.sqlite3"
    drop_job(tmp_path, "short", speech_file, 0.6, face_clip)
    with open(tmp_path / "service.log", "wb") as log:
        proc = subprocess.Popen(service_command(), env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: query(db, "SELECT state FROM jobs WHERE name = 'short'") == [("done",)], 240,
                 "the first job to render", proc)
        drop_job(tmp_path, "long", speech_file, 4.0, face_clip)  # 100 frames: seconds of network per batch
        wait_for(lambda: query(db, "SELECT 1 FROM jobs j JOIN tasks t ON t.job_id = j.id WHERE j.name = 'long' "
                                   "AND t.state = 'running' AND t.progress > 0"), 240,
                 "the second render to reach the network", proc)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        elapsed = time.monotonic() - began
    finally:
        proc.kill()
    log_text = (tmp_path / "service.log").read_text(errors="replace")
    assert code == 0, log_text
    assert elapsed < SHUTDOWN_TIMEOUT + 5, (elapsed, log_text)
    assert "terminate called" not in log_text and "Traceback" not in log_text, log_text
    assert (tmp_path / "outbox" / "short" / "face.mp4").is_file()
    assert query(db, "SELECT state, note FROM jobs WHERE name = 'long'") == [
        ("queued", "Interrupted by a service stop; it runs again at the next start.")]
