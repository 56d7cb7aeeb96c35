"""systemd/lipsyncd.service: verifies cleanly, starts on hosts without the share or a render
group, keeps GPU access, its ``systemd-analyze security`` exposure stays at or below 2.5, and
a real render runs under its system-call filter; the Samba example loads.

Needs ``systemd-analyze`` (Debian package ``systemd``), ``python3-seccomp`` for the filter and
``testparm`` (``samba-common-bin``) for the Samba example, all installed in CI; no running systemd.
"""

from __future__ import annotations

import re
import shutil
import textwrap
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media_tools import write_wav

UNIT = Path(__file__).parents[2] / "systemd" / "lipsyncd.service"
FILTER = Path(__file__).with_name("syscall_filter.py")
INSTALLED_EXEC = "/opt/lipsyncd/venv/bin/lipsyncd"
MAX_EXPOSURE = 2.5


def analyze(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: apt-get install systemd"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def settings(key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", UNIT.read_text(), flags=re.MULTILINE)


def test_the_unit_verifies_without_a_single_warning(tmp_path):
    # verify checks that ExecStart= exists: point it at this checkout's lipsyncd instead of /opt
    local = Path(sys.executable).with_name("lipsyncd")
    assert local.is_file()
    unit = tmp_path / "lipsyncd.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_EXEC, str(local)))
    result = analyze("verify", str(unit))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_exposure_score_is_at_most_2_5():
    result = analyze("security", "--offline=yes", "--no-pager", str(UNIT))
    score = re.search(r"Overall exposure level for lipsyncd\.service: ([0-9.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    print(f"systemd-analyze security exposure: {score.group(1)}")
    assert float(score.group(1)) <= MAX_EXPOSURE


def test_nothing_in_the_unit_fails_a_host_without_the_share_or_a_render_group():
    paths = [p for line in settings("ReadWritePaths") for p in line.split()]
    assert paths and all(p.startswith("-") for p in paths)  # a missing path is skipped, not 226/NAMESPACE
    assert settings("SupplementaryGroups") == []  # a missing group would be 216/GROUP


def test_gpu_access_is_kept():
    assert settings("PrivateDevices") == ["no"] and settings("DevicePolicy") == ["closed"]
    allowed = " ".join(settings("DeviceAllow"))
    for device in ("/dev/nvidiactl", "/dev/nvidia-uvm", "char-nvidia-frontend", "char-nvidia-uvm"):
        assert f"{device} rw" in allowed
    assert settings("ProcSubset") == []  # the CUDA driver reads /proc/driver/nvidia
    assert settings("MemoryDenyWriteExecute") == []  # CUDA and torch compile kernels at run time
    assert any("nvidia-modprobe -u" in line and line.startswith("+") for line in settings("ExecStartPre"))


def test_the_watchdog_notices_a_hung_service_within_two_minutes():
    (watchdog,) = settings("WatchdogSec")  # the service pings every half of it (daemon/systemd.py)
    assert watchdog.endswith("s") and int(watchdog.removesuffix("s")) <= 120


@pytest.mark.slow
def test_a_render_runs_under_the_units_system_call_filter(models_dir, face_clip, tmp_path):
    assert settings("SystemCallFilter") == ["@system-service"] and settings("SystemCallErrorNumber") == ["EPERM"]
    speech = write_wav(tmp_path / "speech.wav", np.random.default_rng(0).normal(0, 0.1, 6400).astype(np.float32))
    script = textwrap.dedent(f"""
        import ctypes, os, sys
        from pathlib import Path
        libc = ctypes.CDLL(None, use_errno=True)  # the filter is on: a mount is refused
        assert libc.mount(b"none", b"{tmp_path}", b"tmpfs", 0, None) == -1 and ctypes.get_errno() == 1
        from lipsyncd.engine import LipSyncEngine, RenderOptions
        engine = LipSyncEngine(Path("{models_dir}"), device="cpu", cache_dir=Path("{tmp_path / 'cache'}"))
        audio = engine.load_audio(Path("{speech}"))
        result = engine.render(audio, Path("{face_clip}"), Path("{tmp_path / 'out.mp4'}"), RenderOptions())
        print("rendered", result.frames, "frames, face in", result.frames_with_face)
    """)
    run = subprocess.run([sys.executable, str(FILTER), sys.executable, "-c", script], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("rendered 10 frames") and (tmp_path / "out.mp4").stat().st_size > 0


def test_the_samba_example_loads_and_keeps_the_service_folders_out_of_reach():
    tool = shutil.which("testparm")
    assert tool, "testparm is missing: apt-get install samba-common-bin"
    example = UNIT.with_name("smb.conf.example")
    result = subprocess.run([tool, "-s", str(example)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Loaded services file OK." in result.stderr, result.stderr
    share = result.stdout.split("[lipsync]", 1)[1]
    assert "veto files = /.processing/.lipsyncd-*/" in share and "force group = lipsync" in share
    assert "force directory mode = 02770" in share and "create mask = 0660" in share
