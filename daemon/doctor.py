"""``lipsyncd doctor``: check what the service needs, and say what to fix for each problem.

Each check returns a :class:`Check`; a failed one makes the command exit non-zero, a warning
does not (the service works, but not as well as it could: no GPU, little free space).
Heavy imports (PyAV, torch, the model registry) happen inside the checks, so a broken
install is reported as a failed check rather than a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .mounts import NETWORK_FS, filesystem_type

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_FREE_GIB = 2.0
LOW_FREE_GIB = 20.0
SERVICE_USER, SERVICE_GROUP = "lipsyncd", "lipsync"
"""Who the systemd unit runs as (User=, Group=); the fixes doctor prints use them."""


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    detail: str
    fix: str = ""


def run_checks(config: Config) -> list[Check]:
    checks: list[Callable[[Config], list[Check]]] = [
        _codecs, _gpu, _models, _precision, _share, _folders, _database, _free_space, _state_is_local]
    results = []
    for check in checks:
        try:
            results += check(config)
        except Exception as exc:  # noqa: BLE001 - a check that crashes is itself a finding, not a traceback
            results.append(Check(check.__name__.strip("_"), FAIL, f"the check itself failed: {exc}",
                                 "reinstall lipsyncd (make setup) and run doctor again"))
    return results


def _codecs(_config: Config) -> list[Check]:
    try:
        import av
    except ImportError as exc:
        return [Check("ffmpeg (PyAV)", FAIL, f"PyAV is not installed ({exc})", "pip install av (or: make setup)")]
    missing = []
    for codec in ("libx264", "aac"):
        try:
            av.codec.Codec(codec, "w")
        except Exception:  # noqa: BLE001 - any failure means "not available"
            missing.append(codec)
    version = av.library_versions.get("libavcodec", ())
    detail = f"PyAV {av.__version__}, FFmpeg libavcodec {'.'.join(map(str, version))}"
    if missing:
        return [Check("ffmpeg (PyAV)", FAIL, f"{detail}; encoders missing: {', '.join(missing)}",
                      "reinstall the PyAV wheel, which bundles libx264 and aac: pip install --force-reinstall av")]
    return [Check("ffmpeg (PyAV)", OK, f"{detail}; libx264 and aac encoders present")]


def _gpu(config: Config) -> list[Check]:
    import torch

    device = config.engine.device
    if torch.cuda.is_available():
        return [Check("GPU", OK, f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}")]
    why = ("torch was built without CUDA (CPU build)" if torch.version.cuda is None
           else "no NVIDIA GPU is visible (driver, /dev/nvidia*, or the service's DeviceAllow)")
    fix = ("install a CUDA build of torch (README: GPU hosts) and check nvidia-smi; "
           f"under systemd, check the unit's DeviceAllow and that {SERVICE_USER} is in the group owning "
           f"/dev/nvidia* (ls -l /dev/nvidia*; sudo usermod -aG GROUP {SERVICE_USER})")
    if device == "cuda":
        return [Check("GPU", FAIL, f"engine.device is cuda but {why}", fix)]
    return [Check("GPU", WARN, f"{why}; videos will render on the CPU, much more slowly", fix)]


def _models(config: Config) -> list[Check]:
    """Which lip-sync models are installed: the one jobs use by default must be; the other is
    reported, as a choice a job.yaml may make."""
    from lipsyncd.engine.errors import ModelError
    from lipsyncd.engine.models import require_model
    from lipsyncd.engine.musetalk.layout import OFFICIAL_FILES, missing_files

    default = config.engine.defaults.model
    name = config.engine.defaults.checkpoint
    try:
        path = require_model(config.engine.models_dir, name)
        wav2lip = Check("model wav2lip", OK, f"installed: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    except ModelError as exc:
        wav2lip = Check("model wav2lip", FAIL if default == "wav2lip" else WARN, str(exc),
                        f"lipsyncd models fetch {name}")
    missing = missing_files(config.engine.models_dir)
    if not missing:
        musetalk = Check("model musetalk", OK, "installed (MuseTalk 1.5, all seven files); "
                                               "seconds per frame without a GPU")
    else:
        detail = (f"not installed: {len(missing)} of its {len(OFFICIAL_FILES)} files missing "
                  f"({', '.join(missing)}); optional, for jobs that ask for engine.model: musetalk")
        fix = "lipsyncd models fetch musetalk, or copy the files offline (README: MuseTalk 1.5)"
        musetalk = (Check("model musetalk", FAIL, detail, fix) if default == "musetalk"
                    else Check("model musetalk", OK, f"{detail} ({fix})"))
    return [wav2lip, musetalk]


def _precision(config: Config) -> list[Check]:
    """How Wav2Lip will run on a CPU, and whether it can: in fp32 through OpenVINO (the
    ``openvino`` extra, faster) or torch, as ``engine.defaults.runtime`` asks; in the opt-in int8,
    OpenVINO and NNCF installed (the ``int8`` extra) and a CPU with int8 dot products (VNNI),
    without which int8 convolutions gain little over fp32. Looked up without importing them."""
    defaults = config.engine.defaults
    missing = [name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is None]
    if defaults.precision != "int8":
        if defaults.runtime == "openvino" and "openvino" in missing:
            return [Check("precision", FAIL, "engine.defaults.runtime is openvino but openvino is not installed",
                          "pip install 'lipsyncd[openvino]' into the service's venv, or set "
                          "engine.defaults.runtime: auto")]
        runtime = ("OpenVINO" if defaults.runtime != "torch" and "openvino" not in missing else "torch"
                   + (" (pip install 'lipsyncd[openvino]' runs it 1.1-1.4x faster)" if "openvino" in missing else ""))
        there = "installed" if not missing else "not installed (pip install 'lipsyncd[int8]')"
        return [Check("precision", OK, f"fp32 on a CPU (the reference's numbers) through {runtime}; "
                                       f"the opt-in int8 is {there}; the face models run the way fp32 does")]
    if missing:
        return [Check("precision", FAIL, f"engine.defaults.precision is int8 but {' and '.join(missing)} "
                      "not installed", "pip install 'lipsyncd[int8]' into the service's venv, or set "
                      "engine.defaults.precision: fp32")]
    if not cpu_has_vnni():
        return [Check("precision", WARN, "int8 on a CPU without VNNI (int8 dot products): expect little gain over "
                      "fp32 for a slightly different picture", "set engine.defaults.precision: fp32")]
    return [Check("precision", OK, "int8 on a CPU with VNNI (OpenVINO); a GPU, when there is one, runs fp16")]


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, or AMX)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def _share(config: Config) -> list[Check]:
    from .share import ShareGuard

    reason = ShareGuard.for_config(config).diagnose()
    if reason:
        return [Check("share", FAIL, reason, "mount the share (or put the folder back); the service waits for it "
                                             "meanwhile and resumes by itself")]
    return [Check("share", OK, "inbox, outbox and error are where the service expects them")]


def _folders(config: Config) -> list[Check]:
    f = config.folders
    named = {"inbox": f.inbox, "outbox": f.outbox, "error": f.error, "state": f.state,
             "models": config.engine.models_dir}
    return [_writable(name, path, on_share=name in ("inbox", "outbox", "error")) for name, path in named.items()]


def _writable(name: str, path: Path, on_share: bool = False) -> Check:
    label = f"folder {name}"
    create = f"sudo install -d -o {SERVICE_USER} -g {SERVICE_GROUP} -m 2770 {path}"
    if path.exists() and not path.is_dir():
        return Check(label, FAIL, f"{path} is a file, not a folder", f"move that file away or change folders.{name}")
    if on_share and not path.parent.is_dir():  # the service never creates a share's folder with its parents
        return Check(label, FAIL, f"{path} does not exist, nor does {path.parent}; the service waits for it "
                                  "(is the share mounted?)", f"mount the share, or create it: {create}")
    if not path.is_dir():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return Check(label, OK, f"{path} does not exist yet; the service creates it")
        return Check(label, FAIL, f"{path} does not exist and {parent} is not writable",
                     f"create it: {create}")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lipsyncd-doctor-"):
            pass
    except OSError as exc:
        return Check(label, FAIL, f"cannot write in {path}: {exc.strerror}",
                     f"give the service's user write access: sudo chown -R {SERVICE_USER}:{SERVICE_GROUP} {path} "
                     f"&& sudo chmod -R g+rwX {path}")
    return Check(label, OK, f"{path} is writable")


def _database(config: Config) -> list[Check]:
    """Open the job database read-only (creating nothing) and say what state it is in."""
    from .store import NoDatabase, Store, StoreError

    path = config.folders.database
    try:
        store = Store(path, readonly=True)
    except NoDatabase as exc:
        return [Check("database", OK, f"{exc}; the service creates it at its first start")]
    except StoreError as exc:
        return [Check("database", FAIL, str(exc), "see the message; then run lipsyncd doctor again")]
    try:
        store.check_integrity()
        jobs = sum(store.count_by_state().values())
    except StoreError as exc:
        return [Check("database", FAIL, str(exc), "see the message; then run lipsyncd doctor again")]
    finally:
        store.close()
    if not os.access(path, os.W_OK):
        return [Check("database", FAIL, f"{path} ({jobs} jobs) cannot be written by this user (uid {os.geteuid()})",
                      f"run doctor as the service's user; give that user write access: chown lipsyncd:lipsync "
                      f"{path}* && chmod u+w {path}, and chattr -i {path} if it is immutable")]
    return [Check("database", OK, f"{path} ({jobs} jobs) is readable, writable and intact")]


def _free_space(config: Config) -> list[Check]:
    results = []
    for name, path in (("outbox", config.folders.outbox), ("state", config.folders.state)):
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(existing).free / 2**30
        level = FAIL if free < MIN_FREE_GIB else WARN if free < LOW_FREE_GIB else OK
        fix = "" if level == OK else f"free space on the disk holding {path}"
        results.append(Check(f"free disk ({name})", level, f"{free:.1f} GiB free at {existing}", fix))
    return results


def _state_is_local(config: Config) -> list[Check]:
    fstype = filesystem_type(config.folders.state)
    if fstype in NETWORK_FS:
        return [Check("state on local disk", FAIL, f"{config.folders.state} is on a {fstype} network mount",
                      "put folders.state on a local disk (SQLite locking is unreliable over the network)")]
    return [Check("state on local disk", OK, f"{config.folders.state} ({fstype or 'unknown'} file system)")]
