"""Run folders: the interface between batch runs and exploration.

A run folder holds ``config.json``, ``metrics.json``, ``predictions.jsonl`` and, for trained runs,
``history.jsonl``, ``diagnostics.json`` and safetensors checkpoints. Notebooks and widgets read run
folders; they never reach into training internals. Files are written atomically (temp file, fsync,
rename) so an interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; run folders are meant to be shared
    os.replace(tmp, path)


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked (locked, finished, interrupted, or outside the runs directory)."""


LOCK_FILE = ".lock"
# what a training run writes; --overwrite removes exactly these, never anything else in the folder
RUN_OUTPUTS = ("config.json", "metrics.json", "predictions.jsonl", "history.jsonl", "doctor.json",
               "diagnostics.json", "compressed.safetensors", "compressed_ids.txt", "checkpoints",
               "pretrain_history.jsonl", "tracking")
_SAFE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")


@contextlib.contextmanager
def run_lock(folder: Path, enabled: bool = True) -> Iterator[None]:
    """An exclusive lock on ``folder`` for the life of a writer; the OS releases it when the process dies."""
    if not enabled:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise RunFolderError(f"{folder} is being written by another process ({fh.read().strip() or 'unknown'}); "
                                 f"wait for it to finish or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {platform.node()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()


def prepare_run_folder(folder: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a finished or interrupted run unless asked; ``overwrite`` removes only seqcomp outputs."""
    folder = Path(folder)
    finished = (folder / "metrics.json").is_file()
    started = (folder / "config.json").is_file()
    if resume:
        if not started:
            raise RunFolderError(f"{folder} holds no training run to resume (config.json is missing)")
        if finished:
            raise RunFolderError(f"{folder} is a finished run (metrics.json exists); nothing to resume")
        return
    if overwrite:
        for name in RUN_OUTPUTS:
            target = folder / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        return
    if finished:
        raise RunFolderError(f"{folder} is a finished run; pass --overwrite to replace it or choose another --out")
    if started:
        raise RunFolderError(f"{folder} holds an interrupted run; continue it with `seqcomp train --resume {folder}` "
                             f"or pass --overwrite to start over")


def safe_relative_path(value: str, what: str) -> Path:
    """A run name or folder parameter that must stay inside the runs directory: relative, no ``..``, plain names."""
    parts = Path(value).parts
    if not value or Path(value).is_absolute() or not parts:
        raise RunFolderError(f"{what}={value!r} must be a relative path inside the runs directory "
                             f"(e.g. 'runs/pipeline'); to write elsewhere use --out")
    for part in parts:
        if part == ".." or not _SAFE_PART.fullmatch(part):
            raise RunFolderError(f"{what}={value!r}: '{part}' is not allowed (use letters, digits and _ . = + -, "
                                 f"no '..', no leading '.' or '-'); it must stay inside the runs directory")
    return Path(*parts)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def environment_info() -> dict[str, Any]:
    """What produced a run: seqcomp version, git commit, key package versions, platform."""
    packages = {}
    for name in ("seqcomp", "torch", "transformers", "accelerate", "datasets", "safetensors"):
        packages[name] = metadata.version(name) if _installed(name) else None
    return {"packages": packages, "git_commit": _git_commit(), "python": platform.python_version(),
            "platform": platform.platform()}


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    result = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def write_eval_run(out: Path, config: dict, records: list[dict], metrics: dict) -> None:
    """Write the three files every evaluated system leaves behind (metrics last: it marks completion)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**config, "environment": environment_info()})
    write_jsonl(out / "predictions.jsonl", records)
    write_json(out / "metrics.json", metrics)


@dataclass
class Run:
    """A run folder loaded for notebooks and widgets."""

    path: Path
    config: dict
    metrics: dict
    predictions: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.get("name") or self.path.name


def load_run(path: str | Path) -> Run:
    path = Path(path)
    for required in ("config.json", "metrics.json"):
        if not (path / required).is_file():
            raise FileNotFoundError(f"{path} is not a finished seqcomp run folder: {required} is missing")
    diagnostics = path / "diagnostics.json"
    return Run(path=path, config=json.loads((path / "config.json").read_text()),
               metrics=json.loads((path / "metrics.json").read_text()),
               predictions=read_jsonl(path / "predictions.jsonl"), history=read_jsonl(path / "history.jsonl"),
               diagnostics=json.loads(diagnostics.read_text()) if diagnostics.is_file() else {})
