"""Inputs people really drop, rendered by the real engine through intake, runner and filing:
an MPEG-1 ``.mpg`` whose name is not UTF-8 (a share with the wrong charset), inside the lone
sub-folder that unzipping ``Job.zip`` makes."""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import pytest
import yaml

from lipsyncd.daemon import config as config_module
from lipsyncd.daemon.engine_port import open_engine
from lipsyncd.daemon.intake import Intake
from lipsyncd.daemon.runner import Runner
from lipsyncd.daemon.service import prepare_folders
from lipsyncd.daemon.store import Store
from lipsyncd.daemon.watcher import InboxWatcher
from lipsyncd.engine import media
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from media_tools import write_wav

pytestmark = pytest.mark.slow
FRAMES = 12


def write_mpeg1(source: Path, path: Path) -> None:
    """The first frames of ``source`` as MPEG-1 in an MPEG program stream, as old cameras write."""
    info = media.probe(source)
    with av.open(str(path), "w", format="mpeg") as container:
        stream = container.add_stream("mpeg1video", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = info.width, info.height, "yuv420p"
        for frame in media.read_frames(source, info, range(FRAMES)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_non_utf8_mpg_in_an_unzipped_folder_renders(tmp_path, models_dir, face_clip, speech_file):
    settings = {"folders": {k: str(tmp_path / k) for k in ("inbox", "outbox", "error", "state")},
                "watch": {"mode": "polling", "quiet_period": 0},
                "engine": {"models_dir": str(models_dir), "device": "cpu", "cache_dir": None,
                           "defaults": {"batch_size": 8}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings))
    cfg = config_module.load(tmp_path / "config.yaml", environ={})
    prepare_folders(cfg)
    inner = cfg.folders.inbox / "Job" / "Job"
    inner.mkdir(parents=True)
    write_wav(inner / "voice.wav", decode_audio(speech_file)[: int(0.4 * SAMPLE_RATE)])
    latin1 = os.fsdecode(b"cam\xe9ra.mpg")
    write_mpeg1(face_clip, inner / latin1)
    original = (inner / latin1).read_bytes()

    store = Store(cfg.folders.database)
    intake = Intake(cfg, InboxWatcher(cfg.folders.inbox, "polling", 1))
    intake.tick(store)
    intake.tick(store)
    runner = Runner(cfg, lambda: open_engine(cfg.engine.models_dir, "cpu", None), threading.Event())
    while runner.step(store):
        pass
    job = store.job(1)
    store.close()

    out = cfg.folders.outbox / "Job"
    assert job.state == "done", (cfg.folders.error / "Job" / "error.txt").read_text()
    result = media.probe(out / "caméra.mp4")  # a valid UTF-8 output name, read as Windows-1252
    assert abs(result.duration_s - 0.4) <= 1 / result.fps + 1e-6
    assert (out / "input" / "Job" / latin1).read_bytes() == original  # returned under its own name
    assert "ok      Job/caméra.mpg  ->  caméra.mp4" in (out / "report.txt").read_text(encoding="utf-8")
