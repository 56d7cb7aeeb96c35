"""Which executor the config asks for (see :mod:`.executor` for the contract)."""

from __future__ import annotations

from .config import Config
from .engine_port import Engine
from .executor import EngineSpec, Executor
from .local_executor import InlineExecutor, LocalExecutor, cuda_device_count, plan_slots

AUDIO_DIR = "audio"
"""Under the state folder (local disk): the shared audio of the running job, for local workers."""


def open_executor(config: Config, engine: Engine, spec: EngineSpec) -> Executor:
    """``executor.kind: ray`` gives Ray; otherwise this host's slots. One slot on the CPU or the
    first GPU renders inline with ``engine`` (the service's own), as lipsyncd always did."""
    if config.executor.kind == "ray":
        from .ray_executor import (
            RayExecutor,  # optional extra: imported only when asked for
        )

        return RayExecutor(config, spec)
    e = config.engine
    slots = plan_slots(e.gpus, e.workers_per_gpu, e.cpu_workers, e.device, cuda_device_count)
    if len(slots) == 1 and slots[0].gpu in (None, 0):
        return InlineExecutor(engine, slots[0].name)
    return LocalExecutor(slots, spec, config.folders.state / AUDIO_DIR, e.stuck_timeout)
