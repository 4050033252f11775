"""SQuAD v1.1 metrics, answer cleaning, bootstrap CIs and scoring of official prediction files.

Everything here follows the official ``evaluate-v1.1.py`` script (run under Python 3, as Hugging Face
``evaluate`` and torchmetrics do) so that numbers are comparable with published SQuAD v1.1 results.
Per-example EM/F1 are fractions (0-1); corpus numbers (``Summary``, ``ScoreReport``) are percent (0-100),
like the official script's output.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "ScoreInputError", "ScoreReport", "Summary", "bootstrap_ci", "clean_answer", "exact_match", "f1",
    "first_token_accuracy", "load_predictions_file", "normalize_answer", "percent", "score_predictions", "summarize",
]

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)
# \b is Unicode-aware for str patterns, so "the" inside "éthe" is not a whole word (Python 3 semantics).
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PREDICTIONS_FIX = 'the file must be one JSON object mapping question id to answer text, e.g. {"56be4db0": "Denver"}'


# --------------------------------------------------------------------------- per-example metrics


def normalize_answer(s: str) -> str:
    """Official SQuAD v1.1 normalisation, in the official order.

    Lowercase, drop ASCII punctuation, drop the whole words a/an/the, collapse whitespace. The order matters
    ("the-end" -> "theend" keeps its article) and is kept so scores match the official script.
    """
    s = s.lower().translate(_PUNCTUATION_TABLE)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _check_golds(golds: Sequence[str]) -> None:
    if isinstance(golds, str):
        raise TypeError(f"golds must be a sequence of answer strings, not the string {golds!r}")
    if len(golds) == 0:
        raise ValueError("golds is empty: every question needs at least one gold answer to be scored")


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold, else 0.0."""
    _check_golds(golds)
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    """Official v1.1 rule: no shared token -> 0, so empty-vs-empty is 0 (v2.0 changed that to 1)."""
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, golds: Sequence[str]) -> float:
    """Max over golds of the multiset token-overlap F1 of normalised tokens (0-1)."""
    _check_golds(golds)
    pred_tokens = normalize_answer(prediction).split()
    return max(_token_f1(pred_tokens, normalize_answer(g).split()) for g in golds)


def clean_answer(text: str, end_of_answer: str = "\n") -> str:
    """Cut a generation down to its answer; the one cleaning step used for every system.

    Greedy generation runs for a fixed number of tokens, past the answer, into the next line or a new
    question. We keep what precedes the first ``end_of_answer`` marker (when non-empty) and the first
    newline, then strip whitespace. A generation that starts with a newline therefore gives "": the model
    ended its answer before saying anything, and every system is treated the same way.
    """
    if end_of_answer:
        text = text.split(end_of_answer, 1)[0]
    return text.split("\n", 1)[0].strip()


def first_token_accuracy(pred_ids: Sequence[int], gold_first_ids: Sequence[int]) -> float:
    """Fraction (0-1) of positions where the predicted first answer token equals the gold one."""
    if len(pred_ids) != len(gold_first_ids):
        raise ValueError(f"length mismatch: {len(pred_ids)} predicted ids vs {len(gold_first_ids)} gold ids")
    if len(pred_ids) == 0:
        raise ValueError("first_token_accuracy of zero examples is undefined")
    return sum(int(p) == int(g) for p, g in zip(pred_ids, gold_first_ids)) / len(pred_ids)


# --------------------------------------------------------------------------- corpus summaries


def percent(fraction: float | None) -> float | None:
    """A share in [0, 1] in percent, the unit of every table; ``None`` (a metric an older run lacks) stays None.

    EM/F1 are stored in percent and first-token accuracy as a fraction (``Summary``), so tables scale it here.
    """
    return None if fraction is None else 100.0 * fraction


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile-bootstrap (1 - alpha) CI of the mean; seeded, so reruns report identical intervals."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty 1-D sequence of numbers, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_ci got NaN or infinite values")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # resample in fixed-size blocks so memory stays bounded for large dev sets
    block = max(1, 2_000_000 // x.size)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Summary:
    """Corpus metrics for one system; EM/F1 and their CIs in percent, first-token accuracy as a fraction."""

    n: int
    exact_match: float
    f1: float
    exact_match_ci: tuple[float, float]
    f1_ci: tuple[float, float]
    first_token_accuracy: float | None = None
    mean_pred_tokens: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (CIs as lists)."""
        d = asdict(self)
        d["exact_match_ci"] = list(self.exact_match_ci)
        d["f1_ci"] = list(self.f1_ci)
        return d


def _check_unit_interval(name: str, values: Sequence[float]) -> None:
    """Per-example scores are fractions; catching percent here avoids reporting 10000%."""
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"{name} values must be per-example fractions in [0, 1]; got e.g. {bad[0]!r}")


def summarize(em: Sequence[float], f1: Sequence[float], first_token_correct: Sequence[bool] | None = None,
              pred_tokens: Sequence[int] | None = None, n_boot: int = 1000, seed: int = 0) -> Summary:
    """Aggregate per-example EM/F1 (fractions) into percent with bootstrap CIs."""
    n = len(em)
    if n == 0:
        raise ValueError("summarize needs at least one example")
    for name, seq in (("f1", f1), ("first_token_correct", first_token_correct), ("pred_tokens", pred_tokens)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"length mismatch: {n} em values vs {len(seq)} {name} values")
    _check_unit_interval("em", em)
    _check_unit_interval("f1", f1)
    em_pct = [percent(v) for v in em]
    f1_pct = [percent(v) for v in f1]
    return Summary(
        n=n,
        exact_match=float(np.mean(em_pct)),
        f1=float(np.mean(f1_pct)),
        exact_match_ci=bootstrap_ci(em_pct, n_boot=n_boot, seed=seed),
        f1_ci=bootstrap_ci(f1_pct, n_boot=n_boot, seed=seed),
        first_token_accuracy=None if first_token_correct is None else sum(map(bool, first_token_correct)) / n,
        mean_pred_tokens=None if pred_tokens is None else float(np.mean(pred_tokens)),
    )


# --------------------------------------------------------------------------- official prediction files


class ScoreInputError(ValueError):
    """A predictions file or mapping that cannot be scored; the message names the file, the id and the fix."""


@dataclass(frozen=True)
class ScoreReport:
    """Official-style corpus scores (percent over all gold questions; unanswered ones score 0)."""

    exact_match: float
    f1: float
    n_questions: int
    n_answered: int
    missing_ids: tuple[str, ...]
    extra_ids: tuple[str, ...]


def _check_predictions(predictions: Any, source: str) -> None:
    if not isinstance(predictions, Mapping):
        raise ScoreInputError(f"{source}: predictions are a {type(predictions).__name__}, not a JSON object; "
                              f"{_PREDICTIONS_FIX}")
    for qid, answer in predictions.items():
        if not isinstance(answer, str):
            raise ScoreInputError(f"{source}: the prediction for question id {qid!r} is {answer!r} "
                                  f"({type(answer).__name__}), not a string; write the answer text as a JSON "
                                  f'string (use "" for no answer)')


def score_predictions(predictions: Mapping, golds: Mapping[str, Sequence[str]],
                      source: str = "predictions") -> ScoreReport:
    """Score an id -> answer mapping like the official v1.1 script, and report what did not line up.

    Every gold question counts: a missing prediction scores 0. Predictions for ids outside ``golds`` are
    ignored (as officially) but listed, since they usually mean the wrong split or a stale file.
    """
    _check_predictions(predictions, source)
    if len(golds) == 0:
        raise ValueError("golds is empty: there are no questions to score against")
    em_sum = f1_sum = 0.0
    missing: list[str] = []
    for qid, answers in golds.items():
        if qid not in predictions:
            missing.append(qid)
            continue
        em_sum += exact_match(predictions[qid], answers)
        f1_sum += f1(predictions[qid], answers)
    n = len(golds)
    return ScoreReport(
        exact_match=100.0 * em_sum / n,
        f1=100.0 * f1_sum / n,
        n_questions=n,
        n_answered=n - len(missing),
        missing_ids=tuple(missing),
        extra_ids=tuple(qid for qid in predictions if qid not in golds),
    )


def load_predictions_file(path: str | Path) -> dict:
    """Read an official-format predictions JSON file, with errors that name the file and the position."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ScoreInputError(f"{path}: not UTF-8 text (byte {e.start}); save the predictions as UTF-8 JSON") from e
    except json.JSONDecodeError as e:
        raise ScoreInputError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
                              f"{_PREDICTIONS_FIX}") from e
    if not isinstance(data, dict):
        raise ScoreInputError(f"{path}: top level is a JSON {type(data).__name__}, not an object; {_PREDICTIONS_FIX}")
    return data


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of evaluated systems: EM/F1 with 95% bootstrap CIs, first-token accuracy, answer length."""
    lines = ["| system | n | EM [95% CI] | F1 [95% CI] | first-token acc | mean pred tokens | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        em_lo, em_hi = r["exact_match_ci"]
        f1_lo, f1_hi = r["f1_ci"]
        lines.append(f"| {r['system']} | {r['n']} | {r['exact_match']:.1f} [{em_lo:.1f}, {em_hi:.1f}] | "
                     f"{r['f1']:.1f} [{f1_lo:.1f}, {f1_hi:.1f}] | {percent(r['first_token_accuracy']):.1f}% | "
                     f"{r['mean_pred_tokens']:.1f} | {r.get('seconds', float('nan'))} |")
    return "\n".join(lines)
