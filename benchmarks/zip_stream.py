"""Throughput and memory of the dashboard's streamed ZIP (``daemon/web/zipstream.py``).

Writes N files of SIZE MB (random bytes, like H.264: incompressible), streams them as one ZIP
to /dev/null the way the dashboard sends it, and prints MB/s and the peak RSS growth, which
must stay near one read chunk whatever the total (no temporary copy, nothing held in memory).

    .venv/bin/python benchmarks/zip_stream.py --files 4 --size-mb 256 --json benchmarks/results/zip.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from lipsyncd.daemon.web.zipstream import zip_stream


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        entries = []
        for i in range(args.files):
            path = Path(tmp) / f"vidéo {i} 🎬.mp4"
            with path.open("wb") as f:
                for _ in range(args.size_mb):
                    f.write(os.urandom(1 << 20))
            entries.append((path.name, path))
        before = peak_rss_mb()
        started = time.perf_counter()
        sent = 0
        with open(os.devnull, "wb") as sink:
            for chunk in zip_stream(entries):
                sink.write(chunk)
                sent += len(chunk)
        seconds = time.perf_counter() - started
    figures = {"files": args.files, "total_mb": round(sent / 2**20, 1), "seconds": round(seconds, 2),
               "mb_per_s": round(sent / 2**20 / seconds, 1), "peak_rss_growth_mb": round(peak_rss_mb() - before, 1)}
    print(json.dumps(figures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
