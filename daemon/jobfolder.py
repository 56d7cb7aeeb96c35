"""What a job folder is: its files sorted into roles, its ``job.yaml``, its content hash.

Everything here reads the folder and never changes it, so intake can call it on a folder that
is still in ``inbox/`` and the runner can call it again on the claimed copy. Every problem is a
:class:`JobFolderError` whose message is written to ``error.txt`` as it is: it names the file
or the job.yaml field and says what is allowed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from lipsyncd.engine.formats import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from lipsyncd.engine.options import RenderOptions

from .names import fold, readable, unique_name, windows_safe

JOB_FILES = ("job.yaml", "job.yml")

JUNK_PATTERNS = (
    ".DS_Store", "._*", "Thumbs.db", "desktop.ini", "~$*", "*.part", "*.tmp", "*.crdownload",
    ".syncthing.*", "~syncthing~*", ".stfolder", ".stignore", "@eaDir", "__MACOSX", "$RECYCLE.BIN",
)
"""OS and copy-tool leftovers (Finder, Explorer, Office, browsers, Syncthing, Synology). Matched
case-insensitively against every path component, so whole ``__MACOSX/`` trees are skipped."""

NAMING_FIELDS = ("stem", "job", "audio", "n")

JOB_KEYS = ("audio", "videos", "output", "priority", "preview_only", "preview_seconds", "engine")

PREVIEW_SECONDS_RANGE = (1, 60)
"""``preview_seconds``: a clip long enough to judge the lips, short enough to render in minutes on a CPU."""


class JobFolderError(ValueError):
    """The folder cannot become a job; the message tells the user what to change."""


def is_junk(relpath: PurePosixPath | str, extra: Iterable[str] = ()) -> bool:
    """True when any component of ``relpath`` matches a junk pattern (built-in or ``extra``)."""
    patterns = [p.casefold() for p in (*JUNK_PATTERNS, *extra)]
    return any(fnmatch.fnmatchcase(part.casefold(), pat)
               for part in PurePosixPath(relpath).parts for pat in patterns)


@dataclass(frozen=True)
class Contents:
    """A folder's files by role, as text (:func:`~.names.readable`), relative to the folder,
    POSIX style, sorted. The media may sit in a lone sub-folder (``root``); find a name's file
    with :func:`on_disk`."""

    audio: tuple[str, ...]
    videos: tuple[str, ...]
    job_file: str | None
    others: tuple[str, ...]
    """Files that are neither used media nor job.yaml: kept and moved along with the audio."""
    root: str = ""
    """The sub-folder the media were taken from ("" for the folder itself), e.g. ``Job/``."""
    links: tuple[str, ...] = ()
    """Symbolic links: never followed nor used, returned as they are."""
    unused_media: tuple[str, ...] = ()
    """Media files in sub-folders, not used (named when the folder lacks audio or video)."""


MEDIA_SUFFIXES = AUDIO_SUFFIXES + VIDEO_SUFFIXES + IMAGE_SUFFIXES


def list_files(folder: Path) -> list[str]:
    """Every regular file and symbolic link under ``folder``, as sorted relative POSIX paths.
    Links are listed (so they travel with the job like any input) but never followed."""
    found = []
    for parent, dirs, files in os.walk(folder):  # os.walk lists a link to a folder in ``dirs``, never enters it
        base = Path(parent)
        for name in (*dirs, *files):
            path = base / name
            if path.is_symlink() or (name in files and path.is_file()):
                found.append(path.relative_to(folder).as_posix())
    return sorted(found, key=lambda p: (fold(p), p))


def is_link(folder: Path, rel: str) -> bool:
    return (folder / rel).is_symlink()


def link_note(name: str) -> str:
    """What to tell a user who dropped a symbolic link instead of a file."""
    return f"{name} is a link; links are not followed — copy the file itself."


def on_disk(folder: Path, name: str) -> Path:
    """The file that ``name`` (as :func:`scan` reports it) denotes in ``folder``. The same path,
    unless a component's bytes on disk are not UTF-8: then the entry whose readable form it is."""
    path = folder
    for part in PurePosixPath(name).parts:
        if not os.path.lexists(path / part):
            try:
                part = next((entry for entry in os.listdir(path) if readable(entry) == part), part)
            except OSError:
                pass
        path = path / part
    return path


def scan(folder: Path, ignore: Iterable[str] = ()) -> Contents:
    """Sort ``folder``'s files into roles. The media are the files directly in the folder, or,
    when it holds none, in its one visible sub-folder that does (what unzipping ``Job.zip``
    makes: ``Job/Job/…``). Other files, links and nested media are "others" that travel along."""
    entries = [rel for rel in list_files(folder) if not is_junk(rel, ignore)]
    links = {rel for rel in entries if is_link(folder, rel)}
    raw_root = _media_root([rel for rel in entries if rel not in links])
    for level in dict.fromkeys(("", raw_root)):
        _refuse_odd_job_file(folder, level)
    root = readable(raw_root)
    audio, videos, others, unused, job_file = [], [], [], [], None
    seen: set[str] = set()
    for rel in entries:
        name = readable(rel)
        if name in seen:  # "Café" in UTF-8 beside "Caf\xe9" in Latin-1: one name on every report
            raise JobFolderError(f"Two files are both named {name!r} once read as text (one name was written "
                                 "in an old encoding); rename one and drop the folder into the inbox again.")
        seen.add(name)
        inner = name[len(root):]  # its path below the media's folder, if it is below it
        direct = name.startswith(root) and "/" not in inner and rel not in links
        suffix = PurePosixPath(name).suffix.lower()
        if direct and inner.lower() in JOB_FILES and job_file is None:
            job_file = name
        elif direct and suffix in AUDIO_SUFFIXES:
            audio.append(name)
        elif direct and suffix in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
            videos.append(name)
        else:
            others.append(name)
            if suffix in MEDIA_SUFFIXES and rel not in links:
                unused.append(name)
    if job_file is None and root:  # a job.yaml written beside the unzipped folder
        job_file = next((n for n in others if n.lower() in JOB_FILES), None)
        others = [n for n in others if n != job_file]
    return Contents(tuple(audio), tuple(videos), job_file, tuple(others), root,
                    tuple(readable(rel) for rel in sorted(links, key=fold)), tuple(unused))


def _media_root(files: list[str]) -> str:
    """"" when the folder itself holds media, else the path (ending in "/") of its lone visible
    sub-folder holding any, and so on down: the first level that holds media itself, or where
    none or several sub-folders do (then nothing is used and the error names what was found)."""
    root = ""
    while True:
        level = [rel[len(root):] for rel in files if rel.startswith(root)]
        if any("/" not in rel and PurePosixPath(rel).suffix.lower() in MEDIA_SUFFIXES for rel in level):
            return root
        holders = {rel.split("/", 1)[0] for rel in level
                   if "/" in rel and PurePosixPath(rel).suffix.lower() in MEDIA_SUFFIXES}
        visible = [h for h in holders if not h.startswith(".")]
        if len(visible) != 1:
            return root
        root += visible[0] + "/"


def _refuse_odd_job_file(folder: Path, level: str) -> None:
    """A job.yaml that is a folder or a link would be ignored silently; say so instead."""
    where = folder / level
    try:
        names = os.listdir(where)
    except OSError:
        return
    for name in names:
        if name.lower() not in JOB_FILES:
            continue
        shown = readable(level + name)
        if (where / name).is_symlink():
            raise JobFolderError(link_note(shown) + " Then drop the folder into the inbox again.")
        if (where / name).is_dir():
            raise JobFolderError(f"{shown} is a folder, not a file. Settings go into a text file named job.yaml; "
                                 "replace the folder with such a file (or remove it) and drop the folder into "
                                 "the inbox again.")


@dataclass(frozen=True)
class JobSpec:
    """A validated job: which audio, which videos in which order, how outputs are named."""

    audio: str
    videos: tuple[str, ...]
    naming: str
    priority: int
    options: RenderOptions
    job_file: str | None
    others: tuple[str, ...]
    """Every non-junk file that is not one of ``videos``: they travel with the audio."""
    preview_only: bool = False
    """Stop after the previews: nothing is rendered (job.yaml ``preview_only: true``)."""
    preview_seconds: float | None = None
    """Also render the first this many seconds of each video as a preview clip, before the renders."""

    def job_settings(self) -> dict[str, Any]:
        """The job-level settings that differ from the defaults, as stored beside the engine
        options (:data:`~.store.JOB_SETTINGS`) and counted in the job's identity."""
        settings: dict[str, Any] = {}
        if self.preview_only:
            settings["preview_only"] = True
        if self.preview_seconds is not None:
            settings["preview_seconds"] = self.preview_seconds
        return settings


def load_spec(folder: Path, *, defaults: RenderOptions, naming: str,
              ignore: Iterable[str] = ()) -> JobSpec:
    """Read and validate ``folder`` as a job; raise :class:`JobFolderError` naming the problem."""
    contents = scan(folder, ignore)
    raw = _read_job_yaml(folder, contents.job_file)
    audio = _pick_audio(raw.get("audio"), contents)
    videos = _pick_videos(raw.get("videos"), contents)
    template = validate_naming(raw.get("output", naming), where="job.yaml: output" if "output" in raw else "naming")
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
        raise JobFolderError(f"job.yaml: priority: must be a whole number from -1000 to 1000; got {priority!r}")
    preview_only = raw.get("preview_only", False)
    if not isinstance(preview_only, bool):
        raise JobFolderError(f"job.yaml: preview_only: must be true or false; got {preview_only!r}")
    preview_seconds = _preview_seconds(raw.get("preview_seconds"))
    engine = raw.get("engine") or {}
    if not isinstance(engine, Mapping):
        raise JobFolderError(f"job.yaml: engine: must be a list of options (key: value); got {engine!r}")
    try:
        options = RenderOptions.from_mapping(engine, where="job.yaml: engine", base=defaults)
    except ValueError as exc:
        raise JobFolderError(str(exc)) from None
    chosen = set(videos)
    others = [f for f in (*contents.audio, *contents.videos, *contents.others) if f not in chosen]
    if contents.job_file:
        others.append(contents.job_file)
    return JobSpec(audio, videos, template, priority, options, contents.job_file, tuple(sorted(others)),
                   preview_only, preview_seconds)


def _preview_seconds(value: Any) -> float | None:
    low, high = PREVIEW_SECONDS_RANGE
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise JobFolderError(f"job.yaml: preview_seconds: must be a number of seconds from {low} to {high}; "
                             f"got {value!r}")
    return float(value)


def _read_job_yaml(folder: Path, job_file: str | None) -> dict[str, Any]:
    if job_file is None:
        return {}
    try:
        raw = yaml.safe_load(on_disk(folder, job_file).read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise JobFolderError(f"{job_file}: is not a text file in UTF-8; save it as UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise JobFolderError(f"{job_file}: is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise JobFolderError(f"{job_file}: must hold settings as 'key: value' lines; got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in JOB_KEYS)
    if unknown:
        raise JobFolderError(f"job.yaml: {unknown[0]}: unknown setting; allowed settings are {', '.join(JOB_KEYS)}")
    return raw


def _match(name: Any, candidates: tuple[str, ...], root: str, field: str, kind: str) -> str:
    """Find the file a job.yaml entry names: exactly, else ignoring case and accent encoding;
    names may leave out the sub-folder ``root`` the media were taken from."""
    if not isinstance(name, str) or not name:
        raise JobFolderError(f"job.yaml: {field}: must be a file name; got {name!r}")
    if name in candidates:
        return name
    loose = [c for c in candidates if fold(name) in (fold(c), fold(c[len(root):]))]
    if len(loose) == 1:
        return loose[0]
    listed = ", ".join(candidates) or "none"
    raise JobFolderError(f"job.yaml: {field}: no {kind} file named {name!r} in the folder; "
                         f"{kind} files found: {listed}")


def _pick_audio(named: Any, contents: Contents) -> str:
    audio = contents.audio
    if named is not None:
        return _match(named, audio, contents.root, "audio", "audio")
    if not audio:
        raise JobFolderError("No audio file in the folder. Add one speech recording "
                             f"({', '.join(AUDIO_SUFFIXES)}).{_not_used(contents, AUDIO_SUFFIXES)}")
    if len(audio) > 1:
        raise JobFolderError(f"Found {len(audio)} audio files ({', '.join(audio)}); a job uses one. "
                             f"Name it in job.yaml, for example  audio: {audio[0]}")
    return audio[0]


def _pick_videos(named: Any, contents: Contents) -> tuple[str, ...]:
    videos = contents.videos
    if named is None:
        if not videos:
            raise JobFolderError("No video or still image in the folder. Add at least one face video "
                                 f"({', '.join(VIDEO_SUFFIXES)}) or photo ({', '.join(IMAGE_SUFFIXES)})."
                                 f"{_not_used(contents, VIDEO_SUFFIXES + IMAGE_SUFFIXES)}")
        return videos
    if isinstance(named, str):
        named = [named]
    if not isinstance(named, list) or not named:
        raise JobFolderError(f"job.yaml: videos: must be a list of file names; got {named!r}")
    picked = [_match(n, videos, contents.root, f"videos[{i}]", "video or image") for i, n in enumerate(named)]
    if len(set(picked)) != len(picked):
        raise JobFolderError("job.yaml: videos: names the same file twice")
    return tuple(picked)


def _not_used(contents: Contents, suffixes: tuple[str, ...]) -> str:
    """Why files of the wanted kind that the folder does hold were not taken (links, sub-folders)."""
    def wanted(name: str) -> bool:
        return PurePosixPath(name).suffix.lower() in suffixes

    notes = [" " + link_note(link) for link in contents.links if wanted(link)]
    nested = [name for name in contents.unused_media if wanted(name)]
    if nested:
        shown = ", ".join(nested[:3]) + (f" and {len(nested) - 3} more" if len(nested) > 3 else "")
        notes.append(f" Found in sub-folders, which are not used: {shown}. Move the file up into the job "
                     "folder itself (a job folder holding no media at all may instead hold them in one "
                     "sub-folder).")
    return "".join(notes)


def validate_naming(template: Any, where: str) -> str:
    """Validate an output naming template such as ``{stem}_synced.mp4``."""
    if not isinstance(template, str) or not template.strip():
        raise JobFolderError(f"{where}: must be a name template such as '{{stem}}.mp4'; got {template!r}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise JobFolderError(f"{where}: {exc} in {template!r}") from None
    bad = [f for f in fields if f not in NAMING_FIELDS]
    if bad:
        raise JobFolderError(f"{where}: unknown field {{{bad[0]}}}; allowed fields are "
                             + ", ".join("{" + f + "}" for f in NAMING_FIELDS))
    return template if template.lower().endswith(".mp4") else template + ".mp4"


def output_names(spec: JobSpec, job_name: str) -> list[str]:
    """One Windows-safe, mutually distinct output file name per video, in order. They all end in
    ``.mp4``, so they never clash with ``report.txt``, ``job.log`` or ``input/`` beside them."""
    taken: list[str] = []
    names = []
    for n, video in enumerate(spec.videos, start=1):
        wanted = spec.naming.format(stem=PurePosixPath(video).stem, job=job_name,
                                    audio=PurePosixPath(spec.audio).stem, n=n)
        name = unique_name(windows_safe(wanted, fallback=f"video {n}.mp4"), taken)
        taken.append(name)
        names.append(name)
    return names


def file_hashes(folder: Path, spec: JobSpec) -> dict[str, str]:
    """sha256 of the audio and of every video, by name: read once at intake, then used for the
    job's identity and handed to the engine, whose face-track cache is keyed by video content."""
    return {name: file_sha256(on_disk(folder, name)) for name in (spec.audio, *spec.videos)}


def content_hash(hashes: dict[str, str], spec: JobSpec) -> str:
    """Identity of a job's inputs: the bytes of audio and videos plus the effective options,
    not the names, so a renamed re-drop of the same material is still recognised."""
    digest = hashlib.sha256()
    digest.update(b"audio:" + hashes[spec.audio].encode())
    for video_hash in sorted(hashes[v] for v in spec.videos):
        digest.update(b"video:" + video_hash.encode())
    digest.update(json.dumps(spec.options.as_dict(), sort_keys=True).encode())
    if settings := spec.job_settings():  # absent for plain jobs: their identity stays what it was
        digest.update(b"job:" + json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
