"""Every prompt the LM reads and every answer it is trained to write: the text, its token ids, its segments.

A zero-shot baseline reads a plain prompt, ``Context: <passage>\\nQuestion: <question>\\nAnswer:``. A trained
text system reads the same context part as the head of its prefix (``Context: <passage>\\n``, or ``Context:``,
the kept passage tokens and ``\\n``); the question, BOS and anchor after it come from the layout config and are
arranged by ``seqcomp.layout.build_prefix``. So a trained head and its zero-shot prompt are one builder, called
with or without the question. A prompt is a list of named ``Segment``s, which is why they live here;
``seqcomp.layout`` embeds and pads them (``build_lm_input``) and owns nothing textual but the layout config's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from .selection import kept_context_ids

if TYPE_CHECKING:
    import torch

    from .config import LayoutConfig
    from .data import SquadExample

CONTEXT_LABEL = "Context:"
QUESTION_LABEL = "Question:"
ANSWER_LABEL = "Answer:"  # the zero-shot anchor; a trained layout's is ``layout.anchor``


class LayoutError(ValueError):
    """A layout piece is unusable (e.g. an anchor that tokenizes to nothing)."""


@dataclass(frozen=True)
class Segment:
    """A named piece of a prefix: token ids (embedded by the LM's table) or ready vectors [n, D]."""

    name: str
    ids: tuple[int, ...] | None = None
    vectors: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.ids is None) == (self.vectors is None):
            raise LayoutError(f"segment '{self.name}' needs exactly one of ids or vectors")

    def __len__(self) -> int:
        return len(self.ids) if self.ids is not None else int(self.vectors.shape[0])


def text_ids(tokenizer, text: str) -> tuple[int, ...]:
    """Token ids of plain text with no special tokens added (defaults differ between versions)."""
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


# --- prompt text --------------------------------------------------------------------------------------


def context_text(context: str) -> str:
    return f"{CONTEXT_LABEL} {context}\n"


def question_text(question: str) -> str:
    """The zero-shot question and anchor, ending where the answer starts."""
    return f"{QUESTION_LABEL} {question}\n{ANSWER_LABEL}"


def raw_prompt(context: str, question: str) -> str:
    """``Context: <passage>\\nQuestion: <question>\\nAnswer:``, the prompt the LM reads zero-shot."""
    return context_text(context) + question_text(question)


def fewshot_text(shots: Sequence[SquadExample]) -> str:
    """Solved examples, each the raw prompt, its first gold answer and a blank line."""
    return "".join(raw_prompt(s.context, s.question) + f" {s.answers[0]}\n\n" for s in shots)


# --- prefix segments ----------------------------------------------------------------------------------


def context_prefix(tokenizer, example: SquadExample, *, with_question: bool) -> list[Segment]:
    """The whole passage as text: the trained ``text`` head, or with the question the zero-shot prompt."""
    if with_question:
        return [Segment("prompt", ids=text_ids(tokenizer, raw_prompt(example.context, example.question)))]
    return [Segment("context", ids=text_ids(tokenizer, context_text(example.context)))]


def kept_context_prefix(kind: str, tokenizer, example: SquadExample, budget: int, *,
                        with_question: bool) -> list[Segment]:
    """``Context:``, the ``budget`` passage tokens a ``truncate``/``select`` system keeps, then ``\\n`` (the trained
    head) or, with the question, ``\\nQuestion: <whole question>\\nAnswer:`` (the zero-shot prompt). The question
    is never cut: the budget is spent on the passage only (bug B8)."""
    kept = tuple(kept_context_ids(kind, tokenizer, example.context, example.question, budget))
    end = (Segment("question", ids=text_ids(tokenizer, "\n" + question_text(example.question))) if with_question
           else Segment("context-end", ids=text_ids(tokenizer, "\n")))
    return [Segment("context-label", ids=text_ids(tokenizer, CONTEXT_LABEL)), Segment("context", ids=kept), end]


def question_prefix(tokenizer, example: SquadExample) -> list[Segment]:
    """The question and anchor alone: the zero-shot ``none`` baseline (no passage)."""
    return [Segment("prompt", ids=text_ids(tokenizer, question_text(example.question)))]


def fewshot_prefix(tokenizer, example: SquadExample, shots: Sequence[SquadExample]) -> list[Segment]:
    return [Segment("shots", ids=text_ids(tokenizer, fewshot_text(shots))),
            *context_prefix(tokenizer, example, with_question=True)]


# --- the answer ---------------------------------------------------------------------------------------


def answer_text(layout: LayoutConfig, answer: str) -> str:
    """A gold answer as the LM writes it after the anchor: ``layout.answer_prefix`` + the stripped text."""
    return layout.answer_prefix + answer.strip()


def answer_text_ids(tokenizer, layout: LayoutConfig, answer: str) -> tuple[int, ...]:
    """The answer's token ids, without the end-of-answer token (``seqcomp.layout.answer_ids`` adds it)."""
    return text_ids(tokenizer, answer_text(layout, answer))
