"""Run folders: the interface between batch runs and exploration.

A run folder holds ``config.json``, ``metrics.json``, ``predictions.jsonl`` and, for trained runs,
``history.jsonl`` (and ``pretrain_history.jsonl``), ``doctor.json``, ``diagnostics.json``, the compressed vectors of
a few test questions and safetensors checkpoints. ``RunFolder`` is the one place that knows these names: the trainer,
the baselines, the CLI, the notebooks and the widgets all read and write through it. Files are written atomically
(temp file, fsync, rename) so an interrupted run never leaves a half-written file that looks complete.
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

from .config import ExperimentConfig, from_dict
from .tracking import TRACKING_DIR

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


def project_root(start: Path | None = None) -> Path:
    """The first folder up from ``start`` (default the cwd) that holds pyproject.toml, else ``start`` itself:
    a notebook kernel starts in ``notebooks/`` but reads and writes the same ``runs/`` as the CLI."""
    here = (start or Path.cwd()).resolve()
    return next((f for f in (here, *here.parents) if (f / "pyproject.toml").is_file()), here)


def project_path(path: str | Path, start: Path | None = None) -> Path:
    """``path`` if absolute, else under the project root; a relative path must stay inside it."""
    path = Path(path)
    if path.is_absolute():
        return path
    return project_root(start) / safe_relative_path(str(path), "out_dir")


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked (locked, finished, interrupted, or outside the runs directory)."""


STATE_FILE = "state.safetensors"  # everything `seqcomp train --resume` needs, under checkpoints/


def checkpoint_files(folder: Path, tag: str) -> tuple[Path, Path]:
    """A checkpoint's two files in ``folder``: ``<tag>.safetensors`` (weights) and ``<tag>.json`` (step, metrics)."""
    return Path(folder) / f"{tag}.safetensors", Path(folder) / f"{tag}.json"


class HistoryLog:
    """A history file appended one JSON row at a time (main process only), mirrored to the tracker if any."""

    def __init__(self, path: Path, enabled: bool = True, tracker=None):
        self.path, self.enabled, self.tracker = Path(path), enabled, tracker

    def reset(self) -> None:
        if self.enabled:
            atomic_write_text(self.path, "")

    def truncate_after(self, step: int) -> None:
        """On resume: drop the rows an interrupted run wrote after its last saved state."""
        if self.enabled:
            lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.is_file() else []
            if lines and not lines[-1].endswith("}"):
                lines.pop()  # the row being appended when the run was killed
            rows = [row for row in map(json.loads, lines) if row["step"] <= step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            if self.tracker is not None:
                self.tracker.log(row)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()


class RunFolder:
    """One run folder: every file name it holds, and reading and writing each file.

    A run is *started* once ``config.json`` exists and *finished* once ``metrics.json`` exists (written last);
    started but not finished is an *interrupted* (or still running) training run.
    """

    CONFIG = "config.json"
    METRICS = "metrics.json"
    PREDICTIONS = "predictions.jsonl"
    HISTORY = "history.jsonl"  # train, eval and skip rows of the training loop
    PRETRAIN_HISTORY = "pretrain_history.jsonl"  # rows of kind "pretrain"
    DOCTOR = "doctor.json"
    DIAGNOSTICS = "diagnostics.json"
    COMPRESSED = "compressed.safetensors"
    COMPRESSED_IDS = "compressed_ids.txt"
    CHECKPOINTS = "checkpoints"
    TRACKING = TRACKING_DIR
    HISTORIES = {"train": HISTORY, "pretrain": PRETRAIN_HISTORY}  # history file by training stage

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder('{self.path}')"

    # ---- paths ------------------------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def predictions_path(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def doctor_path(self) -> Path:
        return self.path / self.DOCTOR

    @property
    def diagnostics_path(self) -> Path:
        return self.path / self.DIAGNOSTICS

    @property
    def compressed_path(self) -> Path:
        return self.path / self.COMPRESSED

    @property
    def compressed_ids_path(self) -> Path:
        return self.path / self.COMPRESSED_IDS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def state_path(self) -> Path:
        return self.checkpoints / STATE_FILE

    def history_path(self, stage: str = "train") -> Path:
        if stage not in self.HISTORIES:
            raise ValueError(f"unknown history stage '{stage}'; choose one of {', '.join(self.HISTORIES)}")
        return self.path / self.HISTORIES[stage]

    def weights_path(self, tag: str = "best") -> Path:
        """``checkpoints/<tag>.safetensors``: ``best`` (what the metrics are for), ``last``, ``pretrained``."""
        return checkpoint_files(self.checkpoints, tag)[0]

    def weights_meta_path(self, tag: str = "best") -> Path:
        return checkpoint_files(self.checkpoints, tag)[1]

    def relative(self, path: Path) -> str:
        """A file of this folder as the name it has inside it (``checkpoints/best.safetensors``), for messages."""
        return Path(path).relative_to(self.path).as_posix()

    # ---- state ------------------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.config_path.is_file()

    @property
    def finished(self) -> bool:
        """``metrics.json`` is written last, so its presence means the run (and its test evaluation) ended."""
        return self.metrics_path.is_file()

    @property
    def interrupted(self) -> bool:
        """Started but not finished: a training run that was stopped (or is still running)."""
        return self.started and not self.finished

    @property
    def resumable(self) -> bool:
        return self.state_path.is_file()

    @property
    def has_compressed(self) -> bool:
        return self.compressed_path.is_file()

    def remove_outputs(self) -> None:
        """Delete what a run writes (``RUN_OUTPUTS``), never anything else in the folder."""
        for name in RUN_OUTPUTS:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    # ---- reading and writing ----------------------------------------------------------------------------------

    def read_config(self) -> dict:
        return json.loads(self.config_path.read_text())

    def write_config(self, config: dict, record_environment: bool = True) -> None:
        """``config.json`` with the environment that produced the run (``record_environment=False``: ``config`` as
        given, e.g. an export that keeps its run's environment)."""
        write_json(self.config_path, {**config, "environment": environment_info()} if record_environment else config)

    def experiment_config(self, hint: str = "is it a seqcomp training run?") -> ExperimentConfig:
        """The ``ExperimentConfig`` stored in ``config.json`` (trained runs, their evaluations and baselines);
        a folder without one gets an error naming the file and ``hint``."""
        try:
            data = self.read_config()
        except json.JSONDecodeError as err:
            raise RunFolderError(f"{self.config_path} is not valid JSON ({err}); {hint}") from None
        if "experiment" not in data:
            raise RunFolderError(f"{self.config_path} has no 'experiment' section; {hint}")
        return from_dict(data["experiment"])

    def read_metrics(self) -> dict:
        return json.loads(self.metrics_path.read_text())

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.metrics_path, metrics)

    def read_predictions(self) -> list[dict]:
        return read_jsonl(self.predictions_path)

    def write_predictions(self, records: Iterable[dict]) -> None:
        write_jsonl(self.predictions_path, records)

    def write_eval(self, config: dict, records: list[dict], metrics: dict) -> None:
        """The three files every evaluated system leaves behind (metrics last: it marks completion)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_config(config)
        self.write_predictions(records)
        self.write_metrics(metrics)

    def read_history(self, stage: str = "train") -> list[dict]:
        """The rows of ``history.jsonl`` (``stage="train"``) or ``pretrain_history.jsonl`` (``"pretrain"``);
        [] when the run has none."""
        return read_jsonl(self.history_path(stage))

    def history_log(self, stage: str = "train", enabled: bool = True, tracker=None) -> HistoryLog:
        """The appending writer of a stage's history file."""
        return HistoryLog(self.history_path(stage), enabled=enabled, tracker=tracker)

    def read_doctor(self) -> list[dict]:
        """The setup doctor's checks (name, passed, ...) run before training."""
        return json.loads(self.doctor_path.read_text())

    def write_doctor(self, checks: list[dict]) -> None:
        write_json(self.doctor_path, checks)

    def read_diagnostics(self) -> dict:
        """The final collapse diagnostics; {} when the run has none (baselines, systems without a compressor)."""
        return json.loads(self.diagnostics_path.read_text()) if self.diagnostics_path.is_file() else {}

    def write_diagnostics(self, diagnostics: dict) -> None:
        write_json(self.diagnostics_path, diagnostics)

    def read_checkpoint_meta(self, tag: str) -> dict:
        """``checkpoints/<tag>.json`` (step and metrics of that checkpoint); {} when there is no such checkpoint."""
        path = self.weights_meta_path(tag)
        return json.loads(path.read_text()) if path.is_file() else {}

    def read_compressed(self):
        """(slots [N, M, D] fp32, the N question ids in order, token-embedding RMS) of a trained run."""
        from safetensors.torch import load_file

        if not self.has_compressed:
            raise FileNotFoundError(f"{self.compressed_path} is missing: only trained runs with a compressor save "
                                    f"compressed slots")
        tensors = load_file(str(self.compressed_path))
        ids = [line for line in self.compressed_ids_path.read_text(encoding="utf-8").splitlines() if line]
        slots = tensors["slots"].float()
        if len(ids) != slots.shape[0]:
            raise ValueError(f"{self.path}: {len(ids)} ids in {self.COMPRESSED_IDS} but {slots.shape[0]} compressed "
                             f"sequences")
        return slots, ids, float(tensors["embedding_rms"])

    def write_compressed(self, slots, embedding_rms: float, ids: Iterable[str]) -> None:
        """The compressed vectors [N, M, D] of N test questions (for the explorer) and their ids, in order."""
        import torch
        from safetensors.torch import save_file

        save_file({"slots": slots.contiguous().cpu(), "embedding_rms": torch.tensor(embedding_rms)},
                  str(self.compressed_path))
        atomic_write_text(self.compressed_ids_path, "\n".join(ids) + "\n")


LOCK_FILE = ".lock"
# what a training run writes; --overwrite removes exactly these, never anything else in the folder
RUN_OUTPUTS = (RunFolder.CONFIG, RunFolder.METRICS, RunFolder.PREDICTIONS, RunFolder.HISTORY, RunFolder.DOCTOR,
               RunFolder.DIAGNOSTICS, RunFolder.COMPRESSED, RunFolder.COMPRESSED_IDS, RunFolder.CHECKPOINTS,
               RunFolder.PRETRAIN_HISTORY, RunFolder.TRACKING)
_SAFE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")


def finished_runs(root: Path, recursive: bool = True) -> list[RunFolder]:
    """The finished run folders under ``root`` (``recursive=False``: its direct children), in path order."""
    pattern = f"**/{RunFolder.METRICS}" if recursive else f"*/{RunFolder.METRICS}"
    return [RunFolder(p.parent) for p in sorted(Path(root).glob(pattern))]


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
    run = RunFolder(folder)
    if resume:
        if not run.started:
            raise RunFolderError(f"{folder} holds no training run to resume ({RunFolder.CONFIG} is missing)")
        if run.finished:
            raise RunFolderError(f"{folder} is a finished run ({RunFolder.METRICS} exists); nothing to resume")
        return
    if overwrite:
        run.remove_outputs()
        return
    if run.finished:
        raise RunFolderError(f"{folder} is a finished run; pass --overwrite to replace it or choose another --out")
    if run.started:
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
    if shutil.which("git") is None:  # e.g. a bare accelerator image: the run still records everything else
        return None
    result = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def write_eval_run(out: Path, config: dict, records: list[dict], metrics: dict) -> None:
    """``RunFolder(out).write_eval(...)``: config, predictions, then metrics (which marks completion)."""
    RunFolder(out).write_eval(config, records, metrics)


@dataclass
class Run:
    """A finished run folder loaded for notebooks and widgets."""

    path: Path
    config: dict
    metrics: dict
    predictions: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.get("name") or self.path.name

    @property
    def folder(self) -> RunFolder:
        """The folder itself, for the files not loaded here (doctor checks, compressed vectors, pretraining)."""
        return RunFolder(self.path)


def load_run(path: str | Path) -> Run:
    folder = RunFolder(path)
    for required in (folder.config_path, folder.metrics_path):
        if not required.is_file():
            raise FileNotFoundError(f"{folder.path} is not a finished seqcomp run folder: {required.name} is missing")
    return Run(path=folder.path, config=folder.read_config(), metrics=folder.read_metrics(),
               predictions=folder.read_predictions(), history=folder.read_history(),
               diagnostics=folder.read_diagnostics())
