"""Run folders: the interface between batch runs and exploration.

A run folder holds ``config.json``, ``metrics.json``, ``predictions.jsonl`` and, for trained runs,
``history.jsonl``, ``diagnostics.json`` and safetensors checkpoints. Notebooks and widgets read run
folders; they never reach into training internals. Files are written atomically (temp file, fsync,
rename) so an interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable


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
