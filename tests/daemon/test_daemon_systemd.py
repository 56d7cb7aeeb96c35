"""sd_notify messages over a real datagram socket; silent without $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket

from lipsyncd.daemon.systemd import Notifier


def test_messages_reach_the_notify_socket(tmp_path):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000",
                             "WATCHDOG_PID": str(os.getpid())})
        notifier.ready("Watching /x")
        notifier.watchdog()
        notifier.stopping()
        assert [sock.recv(100) for _ in range(3)] == [b"READY=1\nSTATUS=Watching /x", b"WATCHDOG=1",
                                                      b"STOPPING=1\nSTATUS=Stopping"]
    assert notifier.enabled and notifier.watchdog_interval == 2.0


def test_without_systemd_nothing_is_sent_and_no_watchdog():
    notifier = Notifier({})
    notifier.ready("x")  # no error
    assert not notifier.enabled and notifier.watchdog_interval is None


def test_watchdog_meant_for_another_process_is_ignored():
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None
