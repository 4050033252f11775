"""Pure table helpers over run predictions: joining runs by question id, filtering, token colouring.

Everything here takes plain run data and returns lists of dicts or HTML strings, so the ipywidgets
views stay thin and every behaviour is testable without a kernel or a browser.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any, Sequence

from seqcomp.metrics import percent
from seqcomp.runs import Run

PER_RUN_FIELDS = ("prediction", "em", "f1", "first_top5", "tokens", "token_logprobs", "first_token",
                  "first_token_correct")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million", "billion",
                "first", "second", "third", "half", "dozen"}


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Unique display names: two runs of the same config (e.g. two ``tier1`` seeds) must not merge."""
    names = [r.name for r in runs]
    return [n if names.count(n) == 1 else f"{n} ({r.path.name})" for n, r in zip(names, runs)]


def is_correct(record: dict) -> bool:
    """EM is stored as 0/1 (possibly float); a question counts as correct when EM is 1."""
    return float(record["em"]) >= 0.5


def join_predictions(runs: Sequence[Run]) -> list[dict]:
    """One row per question of the first run (its order), with every run's answer under ``per_run``."""
    if not runs:
        return []
    labels = run_labels(runs)
    by_id = [{p["id"]: p for p in r.predictions} for r in runs]
    rows = []
    for p in runs[0].predictions:
        per_run = {label: {k: idx[p["id"]].get(k) for k in PER_RUN_FIELDS}
                   for label, idx in zip(labels, by_id) if p["id"] in idx}
        rows.append({"id": p["id"], "question": p["question"], "context": p["context"], "golds": list(p["golds"]),
                     "title": p.get("title", ""), "per_run": per_run})
    return rows


def filter_predictions(runs: Sequence[Run], correct: bool | None = None, f1_range: tuple[float, float] = (0.0, 1.0),
                       text: str = "", article: str | None = None) -> list[dict]:
    """Joined rows whose FIRST run's answer passes the correctness/F1 filters and that match text/article.

    ``text`` is a case-insensitive substring searched in question, context, golds and every prediction.
    """
    if not runs:
        return []
    first = run_labels(runs)[0]
    lo, hi = f1_range
    needle = text.strip().lower()
    out = []
    for row in join_predictions(runs):
        mine = row["per_run"][first]
        if correct is not None and is_correct(mine) != correct:
            continue
        if not lo - 1e-9 <= float(mine["f1"]) <= hi + 1e-9:
            continue
        if article is not None and row["title"] != article:
            continue
        if needle:
            haystack = [row["question"], row["context"], *row["golds"],
                        *(str(r["prediction"]) for r in row["per_run"].values())]
            if not any(needle in h.lower() for h in haystack):
                continue
        out.append(row)
    return out


def articles(runs: Sequence[Run]) -> list[str]:
    return sorted({p.get("title", "") for p in runs[0].predictions}) if runs else []


def prob_colour(prob: float) -> str:
    """Red (unlikely) through yellow to green (confident); light enough to read black text on."""
    return f"hsl({120 * min(max(prob, 0.0), 1.0):.0f}, 75%, 80%)"


def visible_token(token: str) -> str:
    """Make whitespace visible in whitespace-only tokens (a newline token ends answers and is worth seeing)."""
    if token.strip():
        return token.replace("\n", "\u21b5")
    return token.replace("\n", "\u21b5").replace(" ", "\u2423") or "\u2205"


def token_logprob_html(tokens: Sequence[str], logprobs: Sequence[float]) -> str:
    """Each generated token as a span coloured by its probability (hover shows it); tokens are escaped."""
    if len(tokens) != len(logprobs):
        raise ValueError(f"{len(tokens)} tokens but {len(logprobs)} log-probs")
    spans = []
    for tok, lp in zip(tokens, logprobs):
        p = math.exp(lp)
        spans.append(f'<span class="tok" style="background:{prob_colour(p)};white-space:pre-wrap;overflow-wrap:anywhere;'
                     f'border-radius:3px;padding:0 1px;margin:0 1px" title="p={p:.3f} (logp={lp:.2f})">'
                     f"{html.escape(visible_token(tok), quote=True)}</span>")
    return "".join(spans) or '<span style="color:#888">(no tokens)</span>'


def first_token_table(row: dict, golds: Sequence[str] | None = None) -> list[dict]:
    """The first generated position's top-5 as rows; ``gold_prefix`` marks tokens that start a gold answer.

    ``row`` is a predictions record (or a joined row's per-run entry); golds come from ``row["golds"]``
    unless given. The gold check is textual (stripped, case-insensitive), not the tokenizer's.
    """
    golds = list(golds if golds is not None else row.get("golds", []))
    out = []
    for rank, (token, prob) in enumerate(row.get("first_top5") or [], start=1):
        key = token.strip().lower()
        out.append({"rank": rank, "token": token, "prob": float(prob),
                    "gold_prefix": bool(key) and any(g.strip().lower().startswith(key) for g in golds)})
    return out


def answer_type(gold: str) -> str:
    """Coarse answer category for colouring: ``date``, ``number``, ``person-like`` or ``other``."""
    text = gold.strip()
    low = text.lower()
    words = re.findall(r"[a-z]+", low)
    if any(m in words for m in MONTHS) or "century" in words or re.fullmatch(r"(in |c\. )?(1\d{3}|20\d{2})s?", low):
        return "date"
    if re.fullmatch(r"[$£€]?\s*[\d.,]+\s*(%|percent|million|billion|thousand)?", low) or (
            words and all(w in NUMBER_WORDS for w in words) and not re.search(r"[^a-z\s-]", low)):
        return "number"
    parts = text.split()
    if 2 <= len(parts) <= 4 and all(p[:1].isupper() and p.replace(".", "").replace("-", "").isalpha()
                                    for p in parts) and parts[0] not in {"The", "A", "An"}:
        return "person-like"
    return "other"


def metrics_table(runs: Sequence[Run]) -> list[dict]:
    """One row per run with the headline numbers (EM/F1 in percent, first-token accuracy in percent)."""
    rows = []
    for label, run in zip(run_labels(runs), runs):
        m = run.metrics
        fta = m.get("first_token_accuracy")
        rows.append({"run": label, "system": m.get("system", run.config.get("kind", "")), "n": m.get("n"),
                     "exact_match": m.get("exact_match"), "exact_match_ci": m.get("exact_match_ci"),
                     "f1": m.get("f1"), "f1_ci": m.get("f1_ci"),
                     "first_token_accuracy": percent(fta),
                     "mean_pred_tokens": m.get("mean_pred_tokens")})
    return rows


def table_html(rows: Sequence[dict[str, Any]], digits: int = 2) -> str:
    """A plain HTML table (no pandas) for showing any list of dicts in a notebook or widget."""
    if not rows:
        return "<p><i>(empty)</i></p>"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        if isinstance(v, (list, tuple)) and all(isinstance(x, float) for x in v):
            return "[" + ", ".join(f"{x:.{digits}f}" for x in v) + "]"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table class="seqcomp-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
