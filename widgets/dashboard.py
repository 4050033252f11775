"""Training dashboard: follow the history of a (possibly still running) training run.

The trainer appends one JSON line per step and per evaluation (and, for a run with a pretraining stage, one per
pretraining step to its own file first), so re-reading the run folder's histories is all a live view needs;
``refresh()`` does that and swaps the new figures into ``go.FigureWidget``s in place.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import ipywidgets as w
import plotly.graph_objects as go

from seqcomp.runs import RunFolder

from .figures import collapse_over_training_figure, pretraining_figure, training_figure
from .live import replace_figure


class TrainingDashboard:
    """Loss/lr/selection curves and collapse diagnostics of one run folder, refreshed on demand or by a thread;
    the pretraining losses too (in their own panel, shown only when the run has a pretraining stage)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(self.run_dir)
        self.history: list[dict] = []
        self.pretrain_history: list[dict] = []
        self.status = w.HTML()
        self.refresh_button = w.Button(description="refresh", icon="refresh")
        self.pretraining = go.FigureWidget()
        self.pretraining_panel = w.VBox([self.pretraining], layout=w.Layout(display="none"))
        self.training = go.FigureWidget()
        self.collapse = go.FigureWidget()
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.widget = w.VBox([w.HBox([self.refresh_button, self.status]), self.pretraining_panel, self.training,
                              self.collapse])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()

    @property
    def title(self) -> str:
        return f"Training: {self.run_dir.name}"

    @property
    def finished(self) -> bool:
        """The trainer writes the metrics last, so their presence means training (and test eval) ended."""
        return self.folder.finished

    def refresh(self) -> int:
        """Re-read the histories and update the live figures; returns the number of (QA training) history rows."""
        self.pretrain_history = self.folder.read_history("pretrain")
        self.history = self.folder.read_history("train")
        replace_figure(self.pretraining, pretraining_figure(self.pretrain_history))
        self.pretraining_panel.layout.display = None if self.pretrain_history else "none"
        replace_figure(self.training, training_figure(self.history, self.title))
        replace_figure(self.collapse, collapse_over_training_figure(self.history))
        steps = [h["step"] for h in self.history if h.get("kind") == "train"]
        state = "finished" if self.finished else "running (or stopped early)"
        pretrain = f"{len(self.pretrain_history)} pretraining rows, " if self.pretrain_history else ""
        self.status.value = (f"{pretrain}{len(self.history)} history rows, last train step "
                             f"{max(steps) if steps else '-'}; {state}; read {time.strftime('%H:%M:%S')}")
        return len(self.history)

    def static_figure(self) -> go.Figure:
        """A plain figure of the current history for ``fig.show()`` or ``write_html`` (no kernel needed)."""
        return training_figure(self.history, self.title)

    def static_collapse_figure(self) -> go.Figure:
        return collapse_over_training_figure(self.history)

    def static_pretraining_figure(self) -> go.Figure:
        """The pretraining losses as a plain figure (empty when the run has no pretraining stage)."""
        return pretraining_figure(self.pretrain_history)

    def watch(self, interval_s: float = 5.0, until_finished: bool = True) -> threading.Thread:
        """Refresh every ``interval_s`` seconds in a daemon thread (stops with ``stop()`` or when finished)."""
        self.stop()
        self._stop = threading.Event()

        def loop(stop: threading.Event) -> None:
            while not stop.wait(interval_s):
                self.refresh()
                if until_finished and self.finished:
                    return

        self._thread = threading.Thread(target=loop, args=(self._stop,), daemon=True, name="seqcomp-dashboard")
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
