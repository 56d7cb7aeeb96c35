"""A private Samba server for tests and the quiet-period benchmark: smbd on a loopback port with
its own smb.conf and state under a temp folder (no system-wide configuration is touched), and
smbclient to copy into it. Needs root (the share forces user root) and the Debian packages
``samba`` and ``smbclient``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

SMB_CONF = """\
[global]
  smb ports = {port}
  interfaces = 127.0.0.1
  bind interfaces only = yes
  server role = standalone server
  server services = smb
  disable netbios = yes
  map to guest = Bad User
  guest account = root
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  log level = 1
{dirs}
[inbox]
  path = {share}
  read only = no
  guest ok = yes
  guest only = yes
  force user = root
"""
_DIRS = ("private dir", "lock directory", "state directory", "cache directory", "pid directory", "ncalrpc dir")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SambaServer:
    """``with SambaServer(share, root) as smb: smb.client("put a b")``; ``prefix`` runs smbd and
    smbclient inside something (``ip netns exec NAME``)."""

    def __init__(self, share: Path, root: Path, prefix: Sequence[str] = ()) -> None:
        self.share, self.root, self.prefix = share, root, list(prefix)
        self.port = free_port()
        self.conf = root / "smb.conf"
        self._smbd: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        dirs = []
        for key in _DIRS:
            path = self.root / key.split()[0]
            path.mkdir(parents=True, exist_ok=True)
            dirs.append(f"  {key} = {path}")
        self.conf.write_text(SMB_CONF.format(port=self.port, share=self.share, dirs="\n".join(dirs)))
        log = (self.root / "smbd.log").open("wb")
        # A session of its own: smbd signals its whole process group when it stops.
        self._smbd = subprocess.Popen([*self.prefix, "smbd", "--foreground", "--no-process-group", "--debug-stdout",
                                       "-s", str(self.conf)], stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        deadline = time.monotonic() + 15
        while self.client("ls", check=False).returncode != 0:
            if self._smbd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"smbd did not start: {(self.root / 'smbd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._smbd is not None:  # smbd and the children it forked for each client
            os.killpg(self._smbd.pid, signal.SIGTERM)
            try:
                self._smbd.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._smbd.pid, signal.SIGKILL)
                self._smbd.wait()

    def client_command(self, commands: str) -> list[str]:
        return [*self.prefix, "smbclient", "//127.0.0.1/inbox", "-p", str(self.port), "-N", "-s", str(self.conf),
                "-c", commands]

    def client(self, commands: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(self.client_command(commands), capture_output=True, text=True, check=check, timeout=60)
