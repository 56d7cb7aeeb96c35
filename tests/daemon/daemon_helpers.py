"""Helpers for the daemon's tests: a config on a temp folder with test-sized periods, job folders."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import yaml


def write_config(root: Path, **sections: dict) -> Path:
    """A config on ``root`` with test-sized periods; ``sections`` override keys."""
    settings = {
        "folders": {k: str(root / k) for k in ("inbox", "outbox", "error", "state")},
        "watch": {"mode": "polling", "poll_interval": 0.05, "rescan_interval": 0.2, "quiet_period": 0.3,
                  "max_wait": 60},
        "service": {"shutdown_timeout": 5, "progress_interval": 0, "model_retry_interval": 60},
        "engine": {"models_dir": str(root / "models"), "cache_dir": None},
    }
    for section, values in sections.items():
        settings.setdefault(section, {}).update(values)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def make_job(parent: Path, name: str, files: dict[str, bytes | str] | None = None) -> Path:
    """A job folder; by default one audio and one video."""
    files = files if files is not None else {"speech.wav": b"RIFF speech", "face.mp4": b"video bytes"}
    folder = parent / name
    folder.mkdir(parents=True)
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds (an upper
    bound for a busy machine: a passing check returns at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
