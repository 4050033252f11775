"""Pure plotly figures over run data: training curves, collapse diagnostics, headline metrics.

This module is the one import for every pure function the views use; the table helpers live in
``widgets.rows`` and the compressed-vector figures in ``widgets.embeddings`` (re-exported here).
Figures are plain ``go.Figure`` objects so they can be asserted on in tests and written to static HTML.
"""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from seqcomp.runs import Run

from .embeddings import (cross_input_cosine_heatmap, embedding_2d_figure, load_compressed, nearest_tokens,
                         pca_2d, rms_histogram, slot_cosine_heatmap)
from .rows import (answer_type, articles, filter_predictions, first_token_table, join_predictions, metrics_table,
                   run_labels, table_html, token_logprob_html)

__all__ = ["answer_type", "articles", "collapse_over_training_figure", "cross_input_cosine_heatmap",
           "embedding_2d_figure", "filter_predictions", "first_token_table", "join_predictions", "load_compressed",
           "loss_terms", "metrics_figure", "metrics_table", "nearest_tokens", "pca_2d", "pretraining_figure",
           "rms_histogram", "run_labels", "slot_cosine_heatmap", "table_html", "token_logprob_html", "training_figure",
           "budget_figure"]

LOSS_PREFIX = "loss_"  # the trainer logs every loss term as loss_<term>
EVAL_TERMS = (("select_f1", "select F1"), ("select_em", "select EM"),
              ("select_first_token_accuracy", "select first-token acc."))


def _rows(history: Sequence[dict], kind: str) -> list[dict]:
    return [h for h in history if h.get("kind") == kind]


def _series(rows: Sequence[dict], key: str, scale: float = 1.0) -> tuple[list, list]:
    pts = [(r["step"], r[key] * scale) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def loss_terms(rows: Sequence[dict]) -> list[str]:
    """Every ``loss_*`` key the rows hold, ``loss_total`` first, then in the order the trainer logged them: the
    terms come from the history itself, so a new loss lever is plotted without touching the widgets."""
    keys = dict.fromkeys(k for r in rows for k in r if k.startswith(LOSS_PREFIX))
    return sorted(keys, key=lambda k: k != f"{LOSS_PREFIX}total")


def _add_losses(fig: go.Figure, rows: Sequence[dict], **where) -> None:
    for key in loss_terms(rows):
        x, y = _series(rows, key)
        if x:
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=key.removeprefix(LOSS_PREFIX),
                                     legendgroup="loss"), **where)


def training_figure(history: Sequence[dict], title: str = "Training") -> go.Figure:
    """Loss terms, learning rate and selection-slice EM/F1 against step, stacked on a shared x axis.

    Every loss term the train rows hold is drawn (which ones depends on the config's loss levers); first-token
    accuracy is converted to percent so it shares the EM/F1 axis.
    """
    train, evals = _rows(history, "train"), _rows(history, "eval")
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.45, 0.2, 0.35],
                        subplot_titles=("Loss terms (train batches)", "Learning rate", "Selection slice (%)"))
    _add_losses(fig, train, row=1, col=1)
    x, y = _series(train, "lr")
    if x:
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="lr", line={"color": "#888"}), row=2, col=1)
    for key, label in EVAL_TERMS:
        scale = 100.0 if key == "select_first_token_accuracy" else 1.0
        x, y = _series(evals, key, scale)
        if x:
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label, legendgroup="eval"), row=3, col=1)
    fig.update_xaxes(title_text="step", row=3, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="lr", exponentformat="e", row=2, col=1)
    fig.update_yaxes(title_text="%", row=3, col=1)
    fig.update_layout(title=title, height=650, legend={"tracegroupgap": 30}, margin={"t": 80})
    return fig


def pretraining_figure(history: Sequence[dict], title: str = "Pretraining (reconstruction + continuation)"
                       ) -> go.Figure:
    """The loss terms of the pretraining stage (``pretrain_history.jsonl``, rows of kind "pretrain") against its
    own step count, which restarts at 1 before QA training."""
    fig = go.Figure()
    _add_losses(fig, _rows(history, "pretrain"))
    fig.update_layout(title=title, xaxis_title="pretraining step", yaxis_title="loss", height=380, margin={"t": 80})
    return fig


def collapse_over_training_figure(history: Sequence[dict], title: str = "Collapse diagnostics over training"
                                  ) -> go.Figure:
    """The eval-time collapse diagnostics: cosines (input-ignoring vs slot-duplicating), rank, scale.

    Cross-input cosine near 1 means the compressor ignores its input; within-sequence cosine near 1 means
    the slots duplicate each other; an RMS ratio far from 1 means the vectors are off the embedding scale.
    """
    evals = _rows(history, "eval")
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.1,
                        subplot_titles=("Cosine similarity", "Effective rank", "RMS / embedding RMS"))
    for key, label, col in (("diag_cross_input_cosine", "cross-input cosine", 1),
                            ("diag_within_sequence_cosine", "within-sequence cosine", 1),
                            ("diag_effective_rank", "effective rank", 2), ("diag_rms_ratio", "RMS ratio", 3)):
        x, y = _series(evals, key)
        if x:
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label), row=1, col=col)
    fig.add_hline(y=1.0, line_dash="dot", line_color="#888", row=1, col=3)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(range=[-1.05, 1.05], row=1, col=1)
    fig.update_layout(title=title, height=420, margin={"t": 80},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0})
    return fig


def metrics_figure(runs: Sequence[Run], title: str = "Test-slice EM and F1 (95% bootstrap CI)") -> go.Figure:
    """Grouped EM/F1 bars per run with asymmetric CI error bars (runs without a CI get none)."""
    table = metrics_table(runs)
    fig = go.Figure()
    for key, label in (("exact_match", "EM"), ("f1", "F1")):
        values = [r[key] or 0.0 for r in table]
        cis = [r[f"{key}_ci"] or [v, v] for r, v in zip(table, values)]
        fig.add_trace(go.Bar(
            x=[r["run"] for r in table], y=values, name=label, text=[f"{v:.1f}" for v in values],
            textposition="outside",
            error_y={"type": "data", "symmetric": False, "array": [hi - v for (_, hi), v in zip(cis, values)],
                     "arrayminus": [v - lo for (lo, _), v in zip(cis, values)]}))
    fig.update_layout(title=title, barmode="group", yaxis_title="% of questions", yaxis_range=[0, 105],
                      height=400)
    return fig


def ratio_figure(rows: Sequence[dict], title: str = "F1 vs compression ratio (95% bootstrap CI)") -> go.Figure:
    """F1 against compression ratio (context tokens per slot), one line per variant; ``rows`` as written by
    ``seqcomp.experiments.ablation_row`` (variant, ratio, f1, f1_ci). A variant without a ratio (the full-text
    path) is drawn as a horizontal reference line."""
    fig = go.Figure()
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for variant in variants:
        points = sorted((r for r in rows if r["variant"] == variant and r.get("ratio") is not None),
                        key=lambda r: r["ratio"])
        if not points:
            for r in rows:
                if r["variant"] == variant:
                    fig.add_hline(y=r["f1"], line_dash="dot", annotation_text=f"{variant}: F1 {r['f1']:.1f}")
            continue
        cis = [r.get("f1_ci") or [r["f1"], r["f1"]] for r in points]
        fig.add_trace(go.Scatter(
            x=[r["ratio"] for r in points], y=[r["f1"] for r in points], mode="lines+markers", name=variant,
            text=[f"M = {r['m']}" for r in points],
            error_y={"type": "data", "symmetric": False, "array": [hi - r["f1"] for (_, hi), r in zip(cis, points)],
                     "arrayminus": [r["f1"] - lo for (lo, _), r in zip(cis, points)]}))
    fig.update_layout(title=title, xaxis_title="compression ratio (context tokens per slot)", xaxis_type="log",
                      yaxis_title="F1 (%)", height=450)
    return fig


def budget_figure(rows: Sequence[dict], title: str = "F1 vs training questions (95% bootstrap CI)") -> go.Figure:
    """F1 against the number of training questions, one line per system; ``rows`` as written by
    ``seqcomp.experiments.budget_rows`` (system, n_train, f1, f1_ci). Shows where a reference path saturates, so a
    comparison at a smaller budget is not read as a result."""
    fig = go.Figure()
    for system in dict.fromkeys(r["system"] for r in rows):
        points = sorted((r for r in rows if r["system"] == system), key=lambda r: r["n_train"])
        fig.add_trace(go.Scatter(
            x=[r["n_train"] for r in points], y=[r["f1"] for r in points], mode="lines+markers", name=system,
            text=[f"n test = {r['n']}" for r in points],
            error_y={"type": "data", "symmetric": False, "array": [r["f1_ci"][1] - r["f1"] for r in points],
                     "arrayminus": [r["f1"] - r["f1_ci"][0] for r in points]}))
    fig.update_layout(title=title, xaxis_title="training questions", xaxis_type="log", yaxis_title="F1 (%)",
                      height=420)
    return fig
