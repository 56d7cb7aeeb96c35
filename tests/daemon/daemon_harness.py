"""Runs the real service loop with the fake engine (also in worker processes and Ray tasks), for
the kill -9 and SIGTERM tests.

Usage: python tests/daemon/daemon_harness.py CONFIG FRAME_DELAY
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from daemon_fakes import FakeEngine
from lipsyncd.daemon import config, logs, service
from lipsyncd.daemon.executor import EngineSpec


def main() -> int:
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    cfg = config.load(Path(sys.argv[1]))
    logs.setup("info")
    delay = float(sys.argv[2])
    try:
        return service.run(cfg, engine_factory=lambda: FakeEngine(frame_delay=delay),
                           worker_engine=EngineSpec("daemon_fakes:FakeEngine", {"frame_delay": delay}))
    except service.StartError as exc:  # as the CLI does: one line, no traceback
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
