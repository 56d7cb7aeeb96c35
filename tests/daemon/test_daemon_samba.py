"""A real Samba share: a job folder copied in with smbclient whose copy stalls mid-file.

smbclient reads the video from a FIFO; the test feeds half of it, then nothing for three quiet
periods (a Wi-Fi hiccup), then the rest. smbclient sends nothing until its buffer fills or the
input ends, so the server's file sits at 0 bytes, unchanged, for the whole stall: the quiet
period alone would take the folder. Run as root with the Debian packages samba and smbclient.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from daemon_helpers import write_config
from lipsyncd.daemon import config as config_module
from lipsyncd.daemon.intake import Intake
from lipsyncd.daemon.service import prepare_folders
from lipsyncd.daemon.store import Store
from lipsyncd.daemon.watcher import InboxWatcher
from lipsyncd.daemon.writers import ProcScan
from samba_tools import SambaServer
from test_media import make_audio

QUIET = 1.0
STALL = 3 * QUIET


@pytest.mark.parametrize("signal", ["inotify", "proc"])
def test_a_stalled_smb_copy_is_taken_only_once_it_finished(tmp_path, signal):
    mode = "inotify" if signal == "inotify" else "polling"
    cfg = config_module.load(write_config(tmp_path, watch={"quiet_period": QUIET, "mode": mode,
                                                           "poll_interval": 0.1}), environ={})
    prepare_folders(cfg)
    store = Store(cfg.folders.database)
    watcher = InboxWatcher(cfg.folders.inbox, mode, poll_interval=0.1)
    intake = Intake(cfg, watcher)
    if signal == "inotify":  # each signal alone: the other one sees nothing
        intake.readiness.proc = ProcScan(proc=tmp_path / "no-proc")
    video = os.urandom(2_000_000)
    fifo = tmp_path / "copy.fifo"
    os.mkfifo(fifo)
    fed: list[float] = []

    def feed() -> None:
        with fifo.open("wb") as pipe:
            pipe.write(video[:1_000_000])
            pipe.flush()
            time.sleep(STALL)
            pipe.write(video[1_000_000:])
        fed.append(time.monotonic())

    with SambaServer(cfg.folders.inbox, tmp_path / "samba") as smb:
        watcher.start()
        try:
            speech = make_audio(tmp_path / "speech.wav", 1)
            smb.client(f'mkdir "stalled job"; put "{speech}" "stalled job/speech.wav"')
            put = subprocess.Popen(smb.client_command(f'put "{fifo}" "stalled job/face.mkv"'),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            feeder = threading.Thread(target=feed)
            feeder.start()
            claimed_at = None
            deadline = time.monotonic() + STALL + 15
            while claimed_at is None and time.monotonic() < deadline:
                if intake.tick(store):
                    claimed_at = time.monotonic()
                time.sleep(0.1)
            feeder.join()
            output, _ = put.communicate(timeout=30)
        finally:
            watcher.stop()
    assert put.returncode == 0, output
    assert claimed_at is not None, "never claimed"
    assert claimed_at > fed[0]  # never during the stall: only once smbd had the whole file
    job = store.job(1)
    assert (Path(job.work_dir) / "input" / "face.mkv").read_bytes() == video
    assert job.state == "queued"
    store.close()
