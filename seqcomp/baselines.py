"""Zero-shot text baselines as prefixes in the one layout: text, fewshot, none, truncate, select, replay.

``truncate`` keeps the whole question and spends the token budget on the context (bug B8: the earlier
truncation cut ``Context ... Question`` from the end and always lost the question). ``replay`` is the
``text`` prompt fed as its own token embeddings through ``inputs_embeds``: it must equal ``text``
exactly, which shows the embedding interface itself is sound. ``select`` keeps the M context tokens that best
match the question instead of the first M (``seqcomp.selection``).
"""

from __future__ import annotations

from typing import Sequence

from .data import SquadExample
from .layout import Segment, text_ids
from .selection import KEPT_KINDS, kept_context_ids

KINDS = ("text", "fewshot", "none", "truncate", "select", "replay")
RAW_PROMPT = "Context: {context}\nQuestion: {question}\nAnswer:"


def baseline_prefix(kind: str, tokenizer, example: SquadExample, budget: int | None = None,
                    shots: Sequence[SquadExample] = ()) -> list[Segment]:
    """The prompt of a baseline as a one-layout prefix (all segments are token ids)."""
    if kind in ("text", "replay"):
        return [Segment("prompt", ids=text_ids(tokenizer, RAW_PROMPT.format(context=example.context,
                                                                             question=example.question)))]
    if kind == "none":
        return [Segment("prompt", ids=text_ids(tokenizer, f"Question: {example.question}\nAnswer:"))]
    if kind in KEPT_KINDS:
        if budget is None or budget <= 0:
            raise ValueError(f"the {kind} baseline needs --budget M > 0 (context tokens kept)")
        return kept_prefix(kind, tokenizer, example, budget)
    if kind == "fewshot":
        if not shots:
            raise ValueError("the fewshot baseline needs solved examples (shots)")
        demo = "".join(RAW_PROMPT.format(context=s.context, question=s.question) + f" {s.answers[0]}\n\n"
                       for s in shots)
        return [Segment("shots", ids=text_ids(tokenizer, demo)),
                Segment("prompt", ids=text_ids(tokenizer, RAW_PROMPT.format(context=example.context,
                                                                             question=example.question)))]
    raise ValueError(f"unknown baseline '{kind}'; choose one of {', '.join(KINDS)}")


def truncation_prefix(tokenizer, example: SquadExample, budget: int) -> list[Segment]:
    """``Context: <first budget context tokens>\\nQuestion: <whole question>\\nAnswer:``."""
    return kept_prefix("truncate", tokenizer, example, budget)


def kept_prefix(kind: str, tokenizer, example: SquadExample, budget: int) -> list[Segment]:
    """``Context: <the budget context tokens truncate/select keeps>\\nQuestion: <whole question>\\nAnswer:``."""
    context = tuple(kept_context_ids(kind, tokenizer, example.context, example.question, budget))
    return [Segment("context-label", ids=text_ids(tokenizer, "Context:")),
            Segment("context", ids=context),
            Segment("question", ids=text_ids(tokenizer, f"\nQuestion: {example.question}\nAnswer:"))]


def uses_input_ids(kind: str) -> bool:
    """Every baseline but ``replay`` generates from token ids, the LM's ordinary text path."""
    return kind != "replay"
