"""Experiment tracking: the rows of ``history.jsonl`` also go to a tracker through accelerate's tracker interface.

``history.jsonl`` stays the source the widgets and notebooks read; a tracker (TensorBoard, W&B, MLflow, ...) is a
mirror for groups that already follow their runs there, chosen with ``--set train.log_with=NAME``. Only the main
process tracks, as only it writes ``history.jsonl``. Trackers that write local files (TensorBoard, Aim, ...) write
them under ``RUN/tracking/``: ``tensorboard --logdir runs`` shows every run.
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError, ExperimentConfig, flat_keys

PROJECT = "seqcomp"
TRACKING_DIR = "tracking"
# the pip package that makes each accelerate tracker available
PIP_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet-ml",
                "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}
# history.jsonl's per-step numbers: every loss term, lr, grad norm, selection metrics, collapse diagnostics
TRACKED_KEYS = ("lr", "grad_norm")
TRACKED_PREFIXES = ("loss_", "select_", "diag_")


class RunTracker:
    """One accelerate ``GeneralTracker`` fed the numbers of history.jsonl's train and eval rows at their step."""

    def __init__(self, tracker):
        self.tracker = tracker

    def log(self, row: dict) -> None:
        if row.get("kind") in ("train", "eval"):
            self.tracker.log(tracked_values(row), step=row["step"])

    def finish(self) -> None:
        self.tracker.finish()


def tracked_values(row: dict) -> dict[str, float]:
    """The numeric metrics of one history row, under the same names as in history.jsonl."""
    return {k: v for k, v in row.items()
            if (k in TRACKED_KEYS or k.startswith(TRACKED_PREFIXES))
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def require_tracker(name: str) -> None:
    """Fail before training when the tracker's package is missing (accelerate alone would skip it silently)."""
    from accelerate.tracking import get_available_trackers

    if name not in {str(t) for t in get_available_trackers()}:
        raise ConfigError(f"config 'train.log_with': the {name} tracker is not installed; "
                          f"`pip install {PIP_PACKAGES[name]}` (or `pip install 'seqcomp[tracking]'` for tensorboard) "
                          f"or drop --set train.log_with")


def start_tracker(config: ExperimentConfig, out: Path, enabled: bool = True) -> RunTracker | None:
    """The tracker ``train.log_with`` names, started with the run's flat config as its hyperparameters; None when
    tracking is off or this is not the main process."""
    name = config.train.log_with
    if not name or not enabled:
        return None
    require_tracker(name)
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    cls = LOGGER_TYPE_TO_CLASS[name]
    tracker = cls(PROJECT, str(Path(out) / TRACKING_DIR)) if cls.requires_logging_directory else cls(PROJECT)
    tracker.start()
    tracker.store_init_configuration({**flat_keys(config), "run_dir": str(out)})
    return RunTracker(tracker)
