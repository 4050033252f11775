"""The answer-length diagnosis (diagnosis.md, Issue 1): do gold answers fit in ``max_new_tokens``?

Lengths are counted in the model's own tokens, the way the answer follows the anchor
(``seqcomp.prompts.answer_text``), so the recommendation is exact for that tokenizer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .config import LayoutConfig
from .data import SquadExample
from .prompts import answer_text

THRESHOLDS = (12, 20, 32, 64)


@dataclass(frozen=True)
class LengthStats:
    n: int
    mean: float
    median: float
    p95: float
    p99: float
    max: int


@dataclass(frozen=True)
class AnswerLengthReport:
    split: str
    model: str
    n_questions: int
    n_answers: int
    answer_tokens: LengthStats
    percent_over: dict[int, float]  # threshold -> % of gold answers longer than it
    recommended_max_new_tokens: int  # covers >= 99% of gold answers, plus the end-of-answer token
    source_tokens: LengthStats  # context tokens (each distinct context once)
    samples: list[dict]
    answer_lengths: list[int]  # every gold answer's length, for the histogram

    def to_dict(self, with_lengths: bool = False) -> dict:
        data = asdict(self)
        data["percent_over"] = {str(k): v for k, v in self.percent_over.items()}
        if not with_lengths:
            data.pop("answer_lengths")
        return data


def _stats(values: Sequence[int]) -> LengthStats:
    arr = np.asarray(values, dtype=float)
    return LengthStats(n=len(arr), mean=float(arr.mean()), median=float(np.median(arr)),
                       p95=float(np.percentile(arr, 95)), p99=float(np.percentile(arr, 99)), max=int(arr.max()))


def recommend_max_new_tokens(lengths: Sequence[int], coverage: float = 0.99) -> int:
    """Smallest n such that >= ``coverage`` of answers have at most n tokens, plus one end token."""
    ordered = sorted(lengths)
    index = int(np.ceil(coverage * len(ordered))) - 1
    return int(ordered[max(index, 0)]) + 1


def coverage_of(lengths: Sequence[int], max_new_tokens: int) -> float:
    """Fraction of answers that fit, counting the end-of-answer token."""
    return float(np.mean([n + 1 <= max_new_tokens for n in lengths]))


def answer_length_report(examples: Sequence[SquadExample], tokenizer, model_name: str, split: str,
                         layout: LayoutConfig | None = None, n_samples: int = 5) -> AnswerLengthReport:
    layout = layout or LayoutConfig()
    answers = [a for ex in examples for a in ex.answers]
    encoded = tokenizer([answer_text(layout, a) for a in answers], add_special_tokens=False)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    contexts = list(dict.fromkeys(ex.context for ex in examples))
    source = [len(ids) for ids in tokenizer(contexts, add_special_tokens=False)["input_ids"]]
    longest = sorted(range(len(answers)), key=lambda i: -lengths[i])[:n_samples]
    samples = [{"answer": answers[i], "tokens": lengths[i]} for i in longest]
    percent_over = {t: 100.0 * float(np.mean([n > t for n in lengths])) for t in THRESHOLDS}
    return AnswerLengthReport(split=split, model=model_name, n_questions=len(examples), n_answers=len(answers),
                              answer_tokens=_stats(lengths), percent_over=percent_over,
                              recommended_max_new_tokens=recommend_max_new_tokens(lengths),
                              source_tokens=_stats(source), samples=samples, answer_lengths=lengths)


def format_report(report: AnswerLengthReport) -> str:
    a, s = report.answer_tokens, report.source_tokens
    lines = [
        f"Answer lengths in {report.model} tokens ({report.split}: {report.n_questions} questions, "
        f"{report.n_answers} gold answers)",
        f"  mean {a.mean:.2f}  median {a.median:.0f}  p95 {a.p95:.0f}  p99 {a.p99:.0f}  max {a.max}",
        "  " + "  ".join(f"> {t}: {p:.2f}%" for t, p in report.percent_over.items()),
        f"  recommended max_new_tokens: {report.recommended_max_new_tokens} "
        "(covers >= 99% of gold answers + the end-of-answer token)",
        f"Context lengths: mean {s.mean:.1f}  median {s.median:.0f}  p95 {s.p95:.0f}  max {s.max} tokens "
        f"({s.n} distinct contexts)",
        "Longest gold answers: " + "; ".join(f"{x['answer'][:60]!r} ({x['tokens']})" for x in report.samples),
    ]
    return "\n".join(lines)


def answer_length_figure(report: AnswerLengthReport, max_new_tokens_seen: int = 12):
    """Histogram of gold-answer lengths with the diagnosed and recommended generation limits."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=report.answer_lengths, xbins=dict(start=0.5, size=1), name="gold answers"))
    fig.add_vline(x=max_new_tokens_seen + 0.5, line_dash="dash", line_color="firebrick",
                  annotation_text=f"max_new_tokens={max_new_tokens_seen} (diagnosed)")
    fig.add_vline(x=report.recommended_max_new_tokens - 0.5, line_color="seagreen",
                  annotation_text=f"recommended {report.recommended_max_new_tokens}", annotation_position="top left")
    fig.update_layout(title=f"Gold answer length in {report.model} tokens ({report.split}, n={report.n_answers})",
                      xaxis_title="tokens", yaxis_title="answers", bargap=0.05)
    return fig
