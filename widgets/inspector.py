"""Generation inspector: filter test questions and read every run's answer to one question side by side.

The view is a thin ipywidgets layer: filtering is ``rows.filter_predictions`` and the display is the pure
``row_html``; widget parts are attributes so tests (and notebook users) can drive them in code.
"""

from __future__ import annotations

import html
import re
from typing import Sequence

import ipywidgets as w

from seqcomp.runs import Run

from .rows import articles, filter_predictions, first_token_table, is_correct, run_labels, token_logprob_html

ALL_ARTICLES = "(all articles)"
CORRECTNESS = {"all": None, "correct": True, "wrong": False}
LEFT = "style='text-align:left'"  # JupyterLab right-aligns table cells in rendered HTML outputs


def highlight_golds(context: str, golds: Sequence[str]) -> str:
    """Escaped context with every occurrence of a gold answer wrapped in <mark> (case-insensitive)."""
    spans = [(m.start(), m.end()) for g in golds if g.strip()
             for m in re.finditer(re.escape(g.strip()), context, flags=re.IGNORECASE)]
    out, pos = [], 0
    for start, end in sorted(spans):
        if start < pos:
            continue
        out += [html.escape(context[pos:start]), f"<mark>{html.escape(context[start:end])}</mark>"]
        pos = end
    out.append(html.escape(context[pos:]))
    return "".join(out)


def _top5_html(entry: dict, golds: Sequence[str]) -> str:
    rows = first_token_table(entry, golds)
    if not rows:
        return "<i>(no first-token distribution)</i>"
    body = "".join(
        f"<tr><td {LEFT}>{r['rank']}</td><td {LEFT}><code style='white-space:pre'>{html.escape(repr(r['token']))}"
        f"</code>{' &#9733;' if r['gold_prefix'] else ''}</td><td {LEFT}>{r['prob']:.3f}</td></tr>" for r in rows)
    return f"<table class='seqcomp-top5'><tr><th>#</th><th>token</th><th>p</th></tr>{body}</table>"


def run_cell_html(label: str, entry: dict, golds: Sequence[str]) -> str:
    """One run's answer: prediction with EM/F1, first-token top-5 (star = starts a gold) and token colours."""
    ok = is_correct(entry)
    badge = ("<span style='color:#1a7f37'>&#10004; correct</span>" if ok
             else "<span style='color:#cf222e'>&#10008; wrong</span>")
    pred = html.escape(str(entry.get("prediction") or "")) or "<i>(empty)</i>"
    tokens, logprobs = entry.get("tokens") or [], entry.get("token_logprobs") or []
    return (f"<td style='vertical-align:top;text-align:left;padding:6px;border:1px solid #ddd;min-width:220px;max-width:480px'>"
            f"<div><b>{html.escape(label)}</b> {badge}</div>"
            f"<div class='seqcomp-pred' style='font-size:1.1em;margin:4px 0'>{pred}</div>"
            f"<div>EM {float(entry['em']):.0f} &middot; F1 {float(entry['f1']):.2f}</div>"
            f"<div style='margin-top:6px'><b>first token, top 5</b>{_top5_html(entry, golds)}</div>"
            f"<div style='margin-top:6px'><b>generated tokens</b> (colour = probability, red low, green high)<br>"
            f"<span style='color:#000;line-height:1.9'>{token_logprob_html(tokens, logprobs)}</span></div></td>")


def row_html(row: dict) -> str:
    """Context (gold spans marked), question, golds and one column per run: the inspector's display."""
    golds = row["golds"]
    cells = "".join(run_cell_html(label, entry, golds) for label, entry in row["per_run"].items())
    gold_list = ", ".join(f"<code>{html.escape(g)}</code>" for g in golds)
    return (f"<div class='seqcomp-row'>"
            f"<div style='color:#666'>{html.escape(row['title'])} &middot; <code>{html.escape(row['id'])}</code></div>"
            f"<div style='font-size:1.15em;margin:4px 0'><b>Q:</b> {html.escape(row['question'])}</div>"
            f"<div><b>gold answers:</b> {gold_list}</div>"
            f"<details open><summary><b>context</b></summary><div style='max-height:180px;overflow:auto;"
            f"border-left:3px solid #ccc;padding-left:6px'>{highlight_golds(row['context'], golds)}</div></details>"
            f"<table style='border-collapse:collapse;margin-top:8px'><tr>{cells}</tr></table></div>")


def _question_label(row: dict, first: str) -> str:
    mark = "\u2714" if is_correct(row["per_run"][first]) else "\u2718"
    question = row["question"] if len(row["question"]) <= 80 else row["question"][:77] + "..."
    return f"{mark} {question} [{row['id']}]"


class GenerationInspector:
    """Filters (correctness, F1 range, text, article) -> question list -> side-by-side answers of all runs.

    Correctness and F1 filters apply to the FIRST run; the other runs are shown for comparison. ``rows``
    holds the rows currently listed (at most ``max_rows``), ``display`` the HTML of the selected one.
    """

    def __init__(self, runs: Sequence[Run], max_rows: int | None = None) -> None:
        if not runs:
            raise ValueError("GenerationInspector needs at least one run")
        self.runs = list(runs)
        self.labels = run_labels(self.runs)
        self.max_rows = max_rows
        self.rows: list[dict] = []
        self.n_matching = 0
        self.correct = w.Dropdown(options=list(CORRECTNESS), value="all", description=f"{self.labels[0][:14]} is",
                                  tooltip=f"correctness of {self.labels[0]}")
        self.f1_range = w.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.05, description="F1 range",
                                           continuous_update=False, readout_format=".2f")
        self.search = w.Text(value="", placeholder="question, context, answers", description="search",
                             continuous_update=False)
        self.article = w.Dropdown(options=[ALL_ARTICLES, *articles(self.runs)], value=ALL_ARTICLES,
                                  description="article")
        self.status = w.HTML()
        self.question = w.Select(options=[], rows=8, description="question",
                                 layout=w.Layout(width="98%"), style={"description_width": "initial"})
        self.display = w.HTML()
        self.widget = w.VBox([w.HBox([self.correct, self.article]), w.HBox([self.f1_range, self.search]),
                              self.status, self.question, self.display])
        for part in (self.correct, self.f1_range, self.search, self.article):
            part.observe(self._on_filter, names="value")
        self.question.observe(self._on_question, names="value")
        self._on_filter()

    def filters(self) -> dict:
        """The current widget values as ``filter_predictions`` keyword arguments."""
        article = None if self.article.value == ALL_ARTICLES else self.article.value
        return {"correct": CORRECTNESS[self.correct.value], "f1_range": tuple(self.f1_range.value),
                "text": self.search.value, "article": article}

    @property
    def selected(self) -> dict | None:
        return next((r for r in self.rows if r["id"] == self.question.value), None)

    def _on_filter(self, _change: dict | None = None) -> None:
        matching = filter_predictions(self.runs, **self.filters())
        self.n_matching = len(matching)
        self.rows = matching[: self.max_rows] if self.max_rows is not None else matching
        shown = f"showing {len(self.rows)} of {self.n_matching}" if len(self.rows) < self.n_matching else \
            f"{self.n_matching}"
        total = len(self.runs[0].predictions)
        self.status.value = (f"<span class='seqcomp-status'>{shown} matching questions (of {total}); "
                             f"filters apply to <b>{html.escape(self.labels[0])}</b></span>")
        self.question.options = [(_question_label(r, self.labels[0]), r["id"]) for r in self.rows]
        self.question.value = self.rows[0]["id"] if self.rows else None
        self._render()

    def _on_question(self, _change: dict) -> None:
        self._render()

    def _render(self) -> None:
        row = self.selected
        self.display.value = row_html(row) if row else "<p class='seqcomp-empty'><i>No questions match these " \
                                                       "filters.</i></p>"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
