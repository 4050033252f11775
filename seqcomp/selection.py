"""Which context tokens a hard-budget text system keeps: the first M (truncation) or the M that best match
the question (question-aware extractive selection, the baseline a practitioner would pick instead of soft
compression, in the spirit of LLMLingua-style pruning).

Selection keeps ONE contiguous window of M context tokens, in passage order, the window with the highest
BM25 score for the question's content words. The scoring function, stated exactly:

- words are maximal runs of letters/digits, lower-cased; the question's terms are its distinct words minus a
  short list of function words (``STOPWORDS``);
- the candidate documents are all windows of M consecutive context tokens (stride 1); a word belongs to a
  window when its first token does, so a word cut at the window's edge counts where it starts;
- ``score(window) = sum over terms t of idf(t) * tf * (k1 + 1) / (tf + k1)`` with ``tf`` the count of t in the
  window, ``idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5))`` over the N windows (``n_t`` of which contain t), and
  k1 = 1.2; BM25's length normalisation is moot because every window has the same length;
- ties go to the earliest window, so the same input always gives the same tokens; a passage that fits the
  budget is kept whole, and with no term in the passage selection equals truncation.

The question itself is never cut: it is given as text after the kept tokens, as for truncation (bug B8).
"""

from __future__ import annotations

import math
import re

KEPT_KINDS = ("truncate", "select")
STOPWORDS = frozenset(
    "a an the of in on at to for from by with as and or but is are was were be been being do does did what which "
    "who whom whose when where why how that this these those it its his her their there than then into about "
    "after before during over under between many much".split())
K1 = 1.2
_WORD = re.compile(r"[^\W_]+")


def question_terms(question: str) -> set[str]:
    return {w for w in (m.group(0).lower() for m in _WORD.finditer(question)) if w not in STOPWORDS}


def context_ids(tokenizer, context: str) -> tuple[list[int], list[str | None]]:
    """The context's token ids (as they follow the context label of ``seqcomp.prompts``, after a space) and, per
    token, the word that STARTS at it (else None)."""
    text = " " + context
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = {m.start(): m.group(0).lower() for m in _WORD.finditer(text)}
    words: list[str | None] = []
    seen_end = -1
    for start, end in enc["offset_mapping"]:
        word = next((starts[c] for c in range(max(start, seen_end), end) if c in starts), None)
        seen_end = max(seen_end, end)
        words.append(word)
    return list(enc["input_ids"]), words


def best_window(words: list[str | None], terms: set[str], budget: int) -> int:
    """Start index of the highest-BM25 window of ``budget`` tokens (the earliest on ties)."""
    n_windows = len(words) - budget + 1
    windows = [[w for w in words[s:s + budget] if w in terms] for s in range(n_windows)]
    doc_freq = {t: sum(t in win for win in windows) for t in terms}
    idf = {t: math.log(1 + (n_windows - n + 0.5) / (n + 0.5)) for t, n in doc_freq.items()}

    def score(win: list[str]) -> float:
        return sum(idf[t] * tf * (K1 + 1) / (tf + K1) for t, tf in ((t, win.count(t)) for t in set(win)))

    scores = [score(win) for win in windows]
    return max(range(n_windows), key=lambda s: (scores[s], -s))


def kept_context_ids(kind: str, tokenizer, context: str, question: str, budget: int) -> list[int]:
    """The at most ``budget`` context tokens a ``truncate`` or ``select`` system keeps, in passage order."""
    if kind not in KEPT_KINDS:
        raise ValueError(f"'{kind}' keeps no context tokens; choose one of {', '.join(KEPT_KINDS)}")
    if budget <= 0:
        raise ValueError(f"the {kind} budget must be > 0 context tokens, got {budget}")
    ids, words = context_ids(tokenizer, context)
    if kind == "truncate" or len(ids) <= budget:
        return ids[:budget]
    start = best_window(words, question_terms(question), budget)
    return ids[start:start + budget]
