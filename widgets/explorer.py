"""Embedding explorer: where the compressed vectors of a trained run lie, and whether they collapsed.

Composes the pure figures of ``widgets.embeddings``: a PCA map coloured by a chosen label, the
cross-input and within-sequence cosine heatmaps, nearest vocabulary tokens per slot and the RMS
histogram against the LM's token embeddings.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w
import plotly.graph_objects as go
import torch

from seqcomp.runs import Run

from .embeddings import (cross_input_cosine_heatmap, embedding_2d_figure, load_compressed, nearest_tokens,
                         rms_histogram, slot_cosine_heatmap)
from .live import replace_figure
from .rows import answer_type, is_correct

COLOUR_BY = ("article", "correct", "answer type", "first token correct")


def sequence_labels(records: list[dict], colour_by: str) -> list[str]:
    """One label per compressed sequence (predictions records in slot order) for the chosen colouring."""
    if colour_by == "article":
        return [r.get("title", "") for r in records]
    if colour_by == "correct":
        return ["correct" if is_correct(r) else "wrong" for r in records]
    if colour_by == "answer type":
        return [answer_type(r["golds"][0]) if r["golds"] else "other" for r in records]
    if colour_by == "first token correct":
        return ["first token right" if r.get("first_token_correct") else "first token wrong" for r in records]
    raise ValueError(f"unknown colouring '{colour_by}'; choose one of {', '.join(COLOUR_BY)}")


def nearest_tokens_html(neighbours: list[list[tuple[str, float]]]) -> str:
    """Per-slot nearest tokens of ONE sequence as an HTML table (tokens repr()-quoted and escaped)."""
    body = "".join(
        f"<tr><td>{j}</td>" + "".join(f"<td><code style='white-space:pre'>{html.escape(repr(tok))}</code> "
                                     f"<span style='color:#666'>{cos:.2f}</span></td>" for tok, cos in slot) + "</tr>"
        for j, slot in enumerate(neighbours))
    k = len(neighbours[0]) if neighbours else 0
    head = "<tr><th>slot</th>" + "".join(f"<th>#{i + 1}</th>" for i in range(k)) + "</tr>"
    return f"<table class='seqcomp-nearest'>{head}{body}</table>"


class EmbeddingExplorer:
    """Live view over ``compressed.safetensors``: PCA map, collapse heatmaps, nearest tokens, RMS.

    ``embedding_table`` [V, D] and ``tokenizer`` are the reader LM's (``load_lm(name).embed.weight`` and
    ``.tokenizer``); the run stores only the compressed vectors.
    """

    def __init__(self, run: Run, embedding_table: torch.Tensor, tokenizer: Any, k: int = 5) -> None:
        self.run = run
        self.slots, self.ids, self.embedding_rms = load_compressed(run.path)
        by_id = {p["id"]: p for p in run.predictions}
        missing = [i for i in self.ids if i not in by_id]
        if missing:
            raise ValueError(f"{run.path}: compressed ids without a prediction row: {missing[:5]}")
        self.records = [by_id[i] for i in self.ids]
        self.embedding_table = embedding_table.detach().float().cpu()
        self.neighbours = nearest_tokens(self.slots, self.embedding_table, tokenizer, k=k)
        self.hover = [f"{html.escape(r['question'][:60])}<br>gold: {html.escape(', '.join(r['golds'])[:40])}"
                      f"<br>pred: {html.escape(str(r['prediction'])[:40])}" for r in self.records]

        self.colour_by = w.Dropdown(options=list(COLOUR_BY), value="article", description="colour by")
        self.level = w.Dropdown(options=[("one point per input (mean of slots)", "sequence"),
                                         ("one point per slot", "slot")], value="sequence", description="points",
                                layout=w.Layout(width="380px"))
        self.sequence = w.Dropdown(options=[(f"{i}: {r['question'][:50]} [{r['id']}]", i)
                                            for i, r in enumerate(self.records)], value=0, description="sequence",
                                   layout=w.Layout(width="560px"))
        self.scatter = go.FigureWidget(self.scatter_figure())
        self.slot_heatmap = go.FigureWidget(slot_cosine_heatmap(self.slots, 0))
        self.nearest = w.HTML(nearest_tokens_html(self.neighbours[0]))
        self.cross_heatmap = go.FigureWidget(self.cross_figure())
        self.rms = go.FigureWidget(rms_histogram(self.slots, self.embedding_table).update_layout(width=600))
        self.colour_by.observe(self._on_scatter, names="value")
        self.level.observe(self._on_scatter, names="value")
        self.sequence.observe(self._on_sequence, names="value")
        self.widget = w.VBox([
            w.HBox([self.colour_by, self.level]), self.scatter,
            w.HBox([self.cross_heatmap, self.rms]),
            self.sequence, w.HBox([self.slot_heatmap, w.VBox([w.HTML("<b>nearest vocabulary tokens by cosine"
                                                                     "</b>"), self.nearest])]),
        ])

    def labels(self) -> list[str]:
        return sequence_labels(self.records, self.colour_by.value)

    def scatter_figure(self) -> go.Figure:
        colour = self.colour_by.value
        return embedding_2d_figure(self.slots, sequence_labels(self.records, colour), level=self.level.value,
                                   hover=self.hover, colour_name=colour)

    def cross_figure(self) -> go.Figure:
        return cross_input_cosine_heatmap(self.slots, [str(i) for i in range(len(self.ids))])

    def figures(self) -> dict[str, go.Figure]:
        """Static copies of every figure for ``fig.show()`` / HTML export (current widget choices)."""
        index = self.sequence.value
        return {"pca": self.scatter_figure(), "cross_input_cosine": self.cross_figure(),
                "rms": rms_histogram(self.slots, self.embedding_table),
                "slot_cosine": slot_cosine_heatmap(self.slots, index)}

    def _on_scatter(self, _change: dict) -> None:
        replace_figure(self.scatter, self.scatter_figure())

    def _on_sequence(self, change: dict) -> None:
        replace_figure(self.slot_heatmap, slot_cosine_heatmap(self.slots, change["new"]))
        self.nearest.value = nearest_tokens_html(self.neighbours[change["new"]])

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
