"""sd_notify over ``$NOTIFY_SOCKET`` with a plain datagram socket (no libsystemd binding needed).

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a silent no-op, so the service behaves
the same in a terminal. ``WATCHDOG_USEC`` tells how often systemd wants a ping.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY / STATUS / WATCHDOG / STOPPING messages to systemd, if it is listening."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        self._address = address or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        own = not pid or pid == str(os.getpid())
        self.watchdog_interval: float | None = int(usec) / 1e6 / 2 if usec.isdigit() and own else None
        """Seconds between pings: half the timeout systemd set, as sd_watchdog_enabled(3) advises."""

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> None:
        if self._address is None:
            return
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError as exc:  # systemd gone or socket not ours: never fatal
            log.debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self, status: str = "Stopping") -> None:
        self.notify("STOPPING=1", f"STATUS={status}")
