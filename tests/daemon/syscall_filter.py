"""Runs a command under the system-call filter of systemd/lipsyncd.service, as systemd would
(``SystemCallFilter=@system-service``, ``SystemCallErrorNumber=EPERM``), without systemd.

Usage: python syscall_filter.py COMMAND [ARG...]

The allowed calls come from ``systemd-analyze syscall-filter`` (the same table systemd uses),
the filter from libseccomp through Debian's binding (package ``python3-seccomp``).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

DEBIAN_SITE = "/usr/lib/python3/dist-packages"
GROUPS = ("@system-service", "@default")
"""What the unit allows; systemd always allows @default (execve, exit, clock reads, ...) too."""


def syscalls(group: str) -> set[str]:
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", group], capture_output=True,
                         text=True, check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            names |= syscalls(item) if item.startswith("@") else {item}
    return names


def main() -> None:
    sys.path.append(DEBIAN_SITE)
    import seccomp

    allowed = set().union(*(syscalls(g) for g in GROUPS))
    flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in sorted(allowed):
        try:
            flt.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):  # a call this architecture or libseccomp does not know
            pass
    flt.load()
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
