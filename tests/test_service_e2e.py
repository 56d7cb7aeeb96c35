"""The whole product once, for real: `lipsyncd run` as a process, the real engine, a job folder
with two good inputs and one broken video, results filed where users look for them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import yaml

from lipsyncd.engine import media
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from media_tools import write_wav

pytestmark = pytest.mark.slow
JOB = "Démo job 🎬"


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"service exited early with {proc.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_service_renders_a_dropped_job_and_files_the_broken_video_to_error(
        tmp_path: Path, models_dir: Path, face_clip: Path, speech_file: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "folders": {k: str(tmp_path / k) for k in ("inbox", "outbox", "error", "state")},
        "watch": {"mode": "polling", "poll_interval": 0.1, "rescan_interval": 1, "quiet_period": 0.5},
        "service": {"progress_interval": 0.5},
        "engine": {"models_dir": str(models_dir), "device": "cpu", "cache_dir": str(tmp_path / "cache"),
                   "defaults": {"batch_size": 16}},
    }))
    staging = tmp_path / "staging" / JOB  # built outside, then moved in whole, as a finished copy would be
    staging.mkdir(parents=True)
    write_wav(staging / "voice over.wav", decode_audio(speech_file)[: int(1.2 * SAMPLE_RATE)])
    (staging / "face.mp4").write_bytes(face_clip.read_bytes())
    info = media.probe(face_clip)
    cv2.imwrite(str(staging / "portrait.png"), next(media.read_frames(face_clip, info, [10])))
    (staging / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    (staging / ".DS_Store").write_bytes(b"junk")

    env = {**os.environ, "LIPSYNCD_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from lipsyncd.daemon.cli import main; main()", "run"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        (tmp_path / "inbox").mkdir(exist_ok=True)
        staging.rename(tmp_path / "inbox" / JOB)
        wait_for(lambda: (tmp_path / "outbox" / JOB).is_dir() and (tmp_path / "error" / JOB).is_dir(),
                 240, "the job to be filed", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, log

    outbox, error = tmp_path / "outbox" / JOB, tmp_path / "error" / JOB
    for name in ("face.mp4", "portrait.mp4"):
        result = media.probe(outbox / name)
        assert abs(result.duration_s - 1.2) <= 1 / result.fps + 1e-6, name
        assert (result.width, result.height) == (info.width, info.height)
    assert (outbox / "report.txt").is_file()
    assert sorted(p.name for p in (outbox / "input").iterdir()) == ["face.mp4", "portrait.png"]
    # the real engine's previews, made before the renders (broken.mp4 has none: it cannot be read)
    assert sorted(p.name for p in (outbox / "preview").iterdir()) == ["face.jpg", "face.json", "portrait.jpg",
                                                                      "portrait.json"]
    assert "a face in 50 of 50 frames" in (outbox / "preview" / "face.json").read_text()
    assert sorted(p.name for p in error.iterdir()) == [".DS_Store", "broken.mp4", "error.txt", "job.log",
                                                       "voice over.wav"]  # junk travels too: nothing is deleted
    reason = (error / "error.txt").read_text()
    assert "broken.mp4" in reason and "damaged" in reason and ".processing" not in reason
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == [".processing"]
    assert not list((tmp_path / "inbox" / ".processing").iterdir())
    assert not any(p.name.startswith(".") and p.is_file() for p in outbox.rglob("*")), "temporary file in outbox"
