"""The Ray executor: each video attempt is one Ray task, on any GPU of a Ray cluster.

Optional (``pip install lipsyncd[ray]``) and off by default (``executor.kind: ray``). Ray is
used for placement and execution only; the queue, the retry policy and publishing stay with the
service and its SQLite database:

- every task asks for one GPU (``num_gpus=1``; Ray sets its ``CUDA_VISIBLE_DEVICES``) or, on a
  cluster without GPUs, one CPU, and has Ray's own retries off (``max_retries=0``): a worker
  that dies is reported ``lost`` and the runner's retry policy (``engine.max_attempts``) is the
  only one;
- a task reads the inputs from the shared folder (``executor.path_map`` translates the service's
  paths into the workers' mount points) and writes only into its attempt folder; the runner
  alone publishes, once, by rename;
- progress comes back through a small ``progress.json`` the task rewrites in its attempt folder
  (every write is also its heartbeat for the stuck watchdog);
- the job's audio and mel go into Ray's object store once per job (``ray.put``);
- if the service (the driver) dies, Ray drops its tasks; the restarted service finds the job
  running in SQLite, queues it again, and re-submits the videos not yet published. A task of
  the dead driver that still ran would write into an attempt folder that no longer exists.
- a failing call to Ray itself (the head is down, the token is refused) raises
  :class:`~.executor.ExecutorLost`: the runner puts the job back in the queue with the reason
  and tries again later, rather than failing a job that is not at fault.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .config import Config
from .executor import (
    CANCELLED,
    FAILED,
    LOST,
    PROGRESS,
    EngineSpec,
    Executor,
    ExecutorLost,
    Report,
    SlotBoard,
    SlotState,
    VideoWork,
    internal_error,
)

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
CAPACITY_REFRESH_S = 10.0
"""How often the cluster's size is asked again (nodes come and go)."""


class RayExecutor(Executor):
    def __init__(self, config: Config, spec: EngineSpec) -> None:
        import ray  # the config refuses executor.kind: ray when Ray is not installed

        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        address = config.executor.ray_address
        self._where = f"the Ray cluster at {address}" if address else "the service's own Ray"
        if self._owns_ray:
            with self._cluster():
                ray.init(address=address, include_dashboard=False if address is None else None,
                         log_to_driver=False, namespace="lipsyncd")
            log.info("Ray: %s", f"joined the cluster at {address}" if address else "started inside the service")
        self._path_map = sorted(config.executor.path_map.items(), key=lambda kv: -len(kv[0]))
        self._stuck_timeout = config.engine.stuck_timeout
        self._gpu = False
        self._capacity = 0
        self._checked = float("-inf")
        self._told_empty = False
        self._board = SlotBoard([])
        self._refresh_capacity()
        self._spec = spec.on_device("cuda" if self._gpu else "cpu")
        self._task = ray.remote(_render_task).options(max_retries=0, num_gpus=1 if self._gpu else 0, num_cpus=1)
        self._running: dict[str, _Attempt] = {}

    # -- capacity -------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    def free_slots(self) -> int:
        self._refresh_capacity()
        return max(0, self._capacity - len(self._running))

    def _refresh_capacity(self) -> None:
        now = time.monotonic()
        if now - self._checked < CAPACITY_REFRESH_S:
            return
        self._checked = now
        with self._cluster():
            resources = self._ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self._gpu = self._gpu or gpus > 0
        capacity = gpus if self._gpu else int(resources.get("CPU", 1))
        if capacity != self._capacity:
            log.info("Ray cluster: %d %s slot(s)", capacity, "GPU" if self._gpu else "CPU")
        if capacity == 0 == self._capacity and not self._told_empty:
            self._told_empty = True
            log.warning("the Ray cluster offers no GPU and no CPU to render on; videos wait until a node joins")
        for n in range(self._capacity, capacity):
            self._board.add(f"ray{n}", "ray")
        self._capacity = max(capacity, self._capacity)

    # -- work -----------------------------------------------------------------------------

    def share_audio(self, audio: Any, work_dir: Path) -> Any:
        with self._cluster():
            # MuseTalk's prompts hold the engine's whisper network: a remote engine makes its own
            return self._ray.put(replace(audio, path=self._remote(audio.path), prompts=None))

    def submit(self, work: VideoWork) -> None:
        remote = replace(work, video=Path(self._remote(work.video)), output=Path(self._remote(work.output)))
        with self._cluster():
            ref = self._task.remote(json.dumps(asdict(self._spec)), _work_json(remote), work.audio)
        slot = next(s.name for s in self._board.states() if not s.busy)
        self._board.start(slot, work)
        self._running[work.key] = _Attempt(work, ref, slot, time.monotonic())

    def poll(self, timeout: float) -> list[Report]:
        refs = [a.ref for a in self._running.values()]
        if refs:
            with self._cluster():
                ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=timeout)
        else:
            time.sleep(timeout)
            ready = []
        reports = [self._progress(a) for a in list(self._running.values())]
        done = {id(ref) for ref in ready}
        for attempt in [a for a in self._running.values() if id(a.ref) in done]:
            reports.append(self._end(attempt, self._outcome(attempt)))
        for attempt in list(self._running.values()):
            if time.monotonic() - attempt.heard > self._stuck_timeout:
                log.warning("%s: no progress for %.0f s on Ray; its task is stopped", attempt.work.name,
                            self._stuck_timeout)
                self._ray.cancel(attempt.ref, force=True)
                reports.append(self._end(attempt, Report(attempt.work.key, LOST, message=(
                    f"its Ray worker made no progress for {self._stuck_timeout:.0f} seconds and was stopped"))))
        return [r for r in reports if r is not None]

    def cancel(self, key: str) -> None:
        """Ray kills the task's worker process at once; the attempt folder is discarded by the runner."""
        attempt = self._running.get(key)
        if attempt is not None and not attempt.cancelled:
            attempt.cancelled = True
            self._ray.cancel(attempt.ref, force=True)

    def slots(self) -> list[SlotState]:
        return self._board.states()

    def close(self) -> None:
        for key in list(self._running):
            self.cancel(key)
        if self._owns_ray:
            self._ray.shutdown()

    # -- helpers --------------------------------------------------------------------------

    @contextmanager
    def _cluster(self) -> Iterator[None]:
        """A failing call to Ray itself (not to one task) means the cluster is gone or refuses us."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds here (ConnectionError, RpcError...)
            reason = " ".join(str(exc).split())[:300]
            raise ExecutorLost(f"{self._where} cannot be reached ({type(exc).__name__}: {reason}); check that it "
                               "runs (ray status) and that this host has its token (RAY_AUTH_MODE=token, "
                               "RAY_AUTH_TOKEN_PATH); the job runs when it is back") from None

    def _remote(self, path: str | Path) -> str:
        """A path as the Ray workers see it (``executor.path_map``)."""
        text = str(path)
        for local, remote in self._path_map:
            if text == local or text.startswith(local.rstrip("/") + "/"):
                return remote.rstrip("/") + text[len(local.rstrip("/")):]
        return text

    def _progress(self, attempt: _Attempt) -> Report | None:
        """The task's progress file, when it changed since the last look."""
        path = attempt.work.output.parent / PROGRESS_FILE
        try:
            stat = path.stat()
            if stat.st_mtime_ns == attempt.seen:
                return None
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        attempt.seen, attempt.heard = stat.st_mtime_ns, time.monotonic()
        report = Report.from_json(data["report"])
        if report.progress is not None:
            self._board.host(attempt.slot, f"{data['host']} gpu {data['gpus']}" if data["gpus"] else data["host"])
            self._board.progress(attempt.slot, report.progress)
        return report

    def _outcome(self, attempt: _Attempt) -> Report:
        key = attempt.work.key
        if attempt.cancelled:
            return Report(key, CANCELLED)
        try:
            return Report.from_json(self._ray.get(attempt.ref))
        except self._ray.exceptions.TaskCancelledError:
            return Report(key, CANCELLED)
        except self._ray.exceptions.RayTaskError as exc:
            return Report(key, FAILED, message=internal_error(exc.cause if exc.cause else exc))
        except self._ray.exceptions.RayError as exc:
            log.warning("%s: Ray lost the task: %s", attempt.work.name, str(exc).splitlines()[0])
            return Report(key, LOST, message=f"its Ray worker was lost ({type(exc).__name__})")

    def _end(self, attempt: _Attempt, report: Report) -> Report:
        self._running.pop(attempt.work.key, None)
        self._board.clear(attempt.slot)
        return report


class _Attempt:
    def __init__(self, work: VideoWork, ref: Any, slot: str, submitted: float) -> None:
        self.work = work
        self.ref = ref
        self.slot = slot
        self.heard = submitted
        self.seen: int | None = None
        self.cancelled = False


def _work_json(work: VideoWork) -> str:
    from .worker import work_to_json

    return json.dumps({**work_to_json(work), "audio": None})


_ENGINES: dict[str, Any] = {}
"""One engine per Ray worker process and spec: the model is loaded once per worker, not per video."""


def _render_task(spec_json: str, work_json: str, audio: Any) -> dict[str, Any]:
    """Runs inside a Ray worker: render one attempt, reporting progress through its attempt folder."""
    import ray

    from lipsyncd.engine.errors import EngineError

    from .worker import render_video, throttled, work_from_json

    work = replace(work_from_json(json.loads(work_json)), audio=audio)
    host, gpus = socket.gethostname(), ",".join(map(str, ray.get_gpu_ids()))
    progress_file = work.output.parent / PROGRESS_FILE

    def write(report: Report) -> None:
        tmp = progress_file.with_name(f".{PROGRESS_FILE}.tmp")
        tmp.write_text(json.dumps({"report": report.to_json(), "host": host, "gpus": gpus, "pid": os.getpid()}))
        os.replace(tmp, progress_file)

    write(Report(work.key, PROGRESS))
    try:
        if spec_json not in _ENGINES:
            _ENGINES[spec_json] = EngineSpec(**json.loads(spec_json)).build()
    except EngineError as exc:
        return Report(work.key, FAILED, message=str(exc)).to_json()
    return render_video(_ENGINES[spec_json], work, audio, throttled(write, work.key), lambda: False).to_json()
