"""How long does a file on a Samba share sit unchanged while an SMB copy into it is still going?

That is the shortest ``watch.quiet_period`` that never takes a folder too early when the writer
is out of sight (another machine writing through a mount; on the Samba server itself the
service sees smbd's open file instead). The copy runs over a link with a limited rate (``tbf``)
that goes down for a while mid-copy (a Wi-Fi hiccup, a laptop lid): smbclient and a private smbd
talk over the loopback of a network namespace of their own, so nothing outside it is touched.
A thread stats the file on the server side every 20 ms and records every change of size or
modification time; the figure is the longest gap between two changes while the copy ran.

Needs root, the Debian packages samba, smbclient and iproute2, and the ``sch_tbf`` qdisc.

    sudo .venv/bin/python benchmarks/smb_quiet_period.py --copies 4mbit:0 16mbit:0 64mbit:0 16mbit:5 16mbit:15 \
        16mbit:30 --json benchmarks/results/smb_quiet_period.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "daemon"))

from samba_tools import SambaServer


def ns_run(ns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *args], check=True)


class Watcher(threading.Thread):
    """Records the moments the server-side file's (size, mtime) changed."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.changes, self.done = path, [], threading.Event()

    def run(self) -> None:
        last = None
        while not self.done.is_set():
            try:
                st = os.stat(self.path)
                now = (st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
                now = None
            if now != last and now is not None:
                self.changes.append((time.monotonic(), now[0]))
            last = now
            time.sleep(0.02)


def one_copy(root: Path, ns: str, rate: str, size: int, outage_s: float, outage_at_s: float,
             client_timeout: int) -> dict:
    ns_run(ns, "tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", rate, "burst", "32kb", "latency", "400ms")
    share = Path(tempfile.mkdtemp(dir=root, prefix="share-"))
    source = root / "source.bin"
    if not source.exists() or source.stat().st_size != size:
        source.write_bytes(os.urandom(size))
    with SambaServer(share, Path(tempfile.mkdtemp(dir=root, prefix="samba-")), prefix=["ip", "netns", "exec", ns]) as smb:
        watcher = Watcher(share / "copy.bin")
        watcher.start()
        started = time.monotonic()
        put = subprocess.Popen([*smb.client_command(f'put "{source}" copy.bin'), "-t", str(client_timeout)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if outage_s:
            time.sleep(outage_at_s)
            ns_run(ns, "ip", "link", "set", "lo", "down")
            time.sleep(outage_s)
            ns_run(ns, "ip", "link", "set", "lo", "up")
        output, _ = put.communicate(timeout=outage_s + 600)
        ended = time.monotonic()
        time.sleep(0.1)
        watcher.done.set()
        watcher.join()
    times = [started] + [t for t, _ in watcher.changes] + [ended]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    final = watcher.changes[-1][1] if watcher.changes else 0
    return {"rate": rate, "outage_s": outage_s, "client_rc": put.returncode, "bytes_arrived": final, "bytes": size,
            "copy_s": round(ended - started, 2), "changes": len(watcher.changes),
            "longest_unchanged_s": round(max(gaps), 2), "client_said": output.strip().splitlines()[-1:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", nargs="+", default=["4mbit:0", "16mbit:0", "64mbit:0", "16mbit:5", "16mbit:15",
                                                         "16mbit:30"],
                        help="RATE:OUTAGE per copy: the link's rate (tc tbf, e.g. 4mbit for poor Wi-Fi) and the "
                             "seconds it goes down mid-copy")
    parser.add_argument("--size-mb", type=float, default=8)
    parser.add_argument("--outage-at", type=float, default=2.0, help="seconds into the copy the link goes down")
    parser.add_argument("--client-timeout", type=int, default=60,
                        help="smbclient's request timeout (Windows' SMB2 session timeout is 60 s)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ns = f"lipsyncd-smb-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    results = []
    try:
        # An Ethernet-sized MTU: loopback's 64 KiB frames would not fit tbf's bucket.
        ns_run(ns, "ip", "link", "set", "lo", "mtu", "1500", "up")
        with tempfile.TemporaryDirectory() as tmp:
            for copy in args.copies:
                rate, outage = copy.split(":")
                result = one_copy(Path(tmp), ns, rate, int(args.size_mb * 2**20), float(outage), args.outage_at,
                                  args.client_timeout)
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    print(f"\n{args.size_mb:g} MB per copy, smbclient -t {args.client_timeout}")
    print("rate    | outage s | longest unchanged s | copy s | client rc | arrived")
    for r in results:
        print(f"{r['rate']:7} | {r['outage_s']:8g} | {r['longest_unchanged_s']:19.2f} | {r['copy_s']:6.1f} | "
              f"{r['client_rc']:9d} | {r['bytes_arrived']}/{r['bytes']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size_mb": args.size_mb, "outage_at_s": args.outage_at,
                                         "client_timeout_s": args.client_timeout, "copies": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
