"""Question-aware extractive selection: budget respected, passage order kept, question never cut, deterministic."""

from __future__ import annotations

import pytest

from seqcomp.baselines import baseline_prefix
from seqcomp.config import apply_overrides
from seqcomp.layout import text_ids
from seqcomp.presets import get_preset
from seqcomp.selection import best_window, kept_context_ids, question_terms
from seqcomp.system import CompressionSystem

from conftest import make_example

FILLER = " ".join(["the river runs to the city and the school"] * 6)
CONTEXT = f"{FILLER}. In 1000 the king built a church near the school. {FILLER}."


def test_question_terms_drop_function_words():
    assert question_terms("When was the church built by the king?") == {"church", "built", "king"}


def test_selection_keeps_the_window_that_matches_the_question(tiny):
    tok = tiny.tokenizer
    kept = tok.decode(kept_context_ids("select", tok, CONTEXT, "When did the king build the church?", 8))
    assert "king" in kept and "church" in kept
    truncated = tok.decode(kept_context_ids("truncate", tok, CONTEXT, "When did the king build the church?", 8))
    assert "king" not in truncated


@pytest.mark.parametrize("budget", [1, 5, 16, 40])
def test_budget_respected_and_passage_order_kept(tiny, budget):
    tok = tiny.tokenizer
    full = list(text_ids(tok, " " + CONTEXT))
    kept = kept_context_ids("select", tok, CONTEXT, "Who built the church?", budget)
    assert len(kept) == min(budget, len(full))
    starts = [i for i in range(len(full) - len(kept) + 1) if full[i:i + len(kept)] == kept]
    assert starts, "the kept tokens are one contiguous run of the passage, in passage order"


def test_short_passage_kept_whole_and_no_match_equals_truncation(tiny):
    tok = tiny.tokenizer
    assert kept_context_ids("select", tok, "The key is red.", "What is the key?", 64) == list(
        text_ids(tok, " The key is red."))
    assert (kept_context_ids("select", tok, CONTEXT, "Zebra xylophone?", 8)
            == kept_context_ids("truncate", tok, CONTEXT, "Zebra xylophone?", 8))


def test_same_input_same_tokens_and_earliest_window_on_ties():
    words = ["king", None, "king", None]
    assert best_window(words, {"king"}, 1) == 0
    assert best_window(words, {"king"}, 2) == best_window(list(words), {"king"}, 2) == 0


def test_selection_prefix_keeps_the_whole_question(tiny):
    question = "When did the king build the church near the school and the river?"
    ex = make_example(0, CONTEXT, question, ("1000",))
    prefix = baseline_prefix("select", tiny.tokenizer, ex, budget=4)
    assert len(prefix[1].ids) == 4
    assert question in tiny.tokenizer.decode([t for s in prefix for t in s.ids])
    with pytest.raises(ValueError, match="budget"):
        baseline_prefix("select", tiny.tokenizer, ex)


def test_select_trained_system_uses_the_same_kept_tokens(tiny):
    cfg = apply_overrides(get_preset("select-trained"), {"model.name": "tiny", "model.precision": "fp32",
                                                         "compressor.m": 6})
    ex = make_example(0, CONTEXT, "When did the king build the church?", ("1000",))
    system = CompressionSystem(cfg, tiny)
    head = system.prefixes(tiny, [ex])[0]
    context = next(s for s in head if s.name == "context")
    assert list(context.ids) == kept_context_ids("select", tiny.tokenizer, ex.context, ex.question, 6)
    assert list(context.ids) == list(baseline_prefix("select", tiny.tokenizer, ex, budget=6)[1].ids)
