"""Swapping a figure's content into a live ``go.FigureWidget`` (plotly 6+ FigureWidget runs on anywidget)."""

from __future__ import annotations

import plotly.graph_objects as go


def replace_figure(widget: go.FigureWidget, fig: go.Figure) -> go.FigureWidget:
    """Replace all traces and the layout in place, so the notebook output updates without re-displaying.

    Traces from ``make_subplots`` carry their axis references, so copying data plus layout keeps subplots.
    """
    with widget.batch_update():
        widget.data = []
        widget.layout = fig.layout
    widget.add_traces(list(fig.data))
    return widget
