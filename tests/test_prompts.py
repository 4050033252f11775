"""seqcomp.prompts is the one home of prompt text: no other module spells it, trained and zero-shot text systems
share its builders, and the token ids it gives are pinned."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import REPO
from seqcomp import baselines, prompts, system
from seqcomp.baselines import baseline_prefix
from seqcomp.config import CompressorConfig, LayoutConfig
from seqcomp.evaluate import gold_first_ids
from seqcomp.layout import answer_ids
from seqcomp.presets import get_preset
from seqcomp.system import CompressionSystem

PROMPT_STRINGS = ("Context:", "Question:", "Answer:")
HOMES = {"seqcomp/prompts.py",
         "seqcomp/config.py"}  # the trained layout's defaults (question template, anchor) and their messages
# files that still spell prompt text, owned elsewhere: each switches to seqcomp.prompts, then leaves this list
# data, not a prompt: the tiny tokenizer's BPE training corpus (changing it would change every tiny-model number)
PENDING = {"seqcomp/lm.py": "the tiny tokenizer's training corpus"}


def _spellings() -> dict[str, list[int]]:
    """Per library file, the lines that hold a prompt string (code, comments and docstrings alike: a grep)."""
    files = sorted((REPO / "seqcomp").rglob("*.py")) + sorted((REPO / "widgets").rglob("*.py"))
    found = {}
    for path in files:
        lines = [n for n, line in enumerate(path.read_text().splitlines(), 1) if any(s in line for s in PROMPT_STRINGS)]
        if lines:
            found[path.relative_to(REPO).as_posix()] = lines
    return found


def test_prompt_strings_have_one_home():
    found = _spellings()
    strays = {path: lines for path, lines in found.items() if path not in HOMES | PENDING.keys()}
    assert not strays, f"prompt text spelled outside seqcomp/prompts.py (file: lines): {strays}; build it there"
    cleaned = sorted(PENDING.keys() - found.keys())
    assert not cleaned, f"{cleaned} no longer spell prompt text: remove them from PENDING in tests/test_prompts.py"


def _trained_heads(tiny, examples, kind: str, m: int):
    config = dataclasses.replace(get_preset("tiny"), compressor=CompressorConfig(kind=kind, m=m))
    return CompressionSystem(config, tiny).heads(tiny, examples)[0]


def test_trained_and_zero_shot_text_systems_share_the_builders(tiny, examples):
    assert system.kept_context_prefix is baselines.kept_context_prefix is prompts.kept_context_prefix
    assert system.context_prefix is baselines.context_prefix is prompts.context_prefix
    tok = tiny.tokenizer
    for kind in ("truncate", "select"):
        trained = _trained_heads(tiny, examples, kind, 4)
        for head, ex in zip(trained, examples):
            zero_shot = baseline_prefix(kind, tok, ex, budget=4)
            assert head == prompts.kept_context_prefix(kind, tok, ex, 4, with_question=False)
            assert zero_shot == prompts.kept_context_prefix(kind, tok, ex, 4, with_question=True)
            assert head[:2] == zero_shot[:2]  # the label and the same kept passage tokens
            assert [s.name for s in head] == ["context-label", "context", "context-end"]
            assert tok.decode(zero_shot[2].ids) == "\n" + prompts.question_text(ex.question)
    for head, ex in zip(_trained_heads(tiny, examples, "text", 4), examples):
        assert head == prompts.context_prefix(tok, ex, with_question=False)
        assert prompts.context_text(ex.context) + prompts.question_text(ex.question) == prompts.raw_prompt(
            ex.context, ex.question)


def test_answer_target_is_the_one_the_layout_trains_and_evaluation_scores(tiny, examples):
    tok, layout = tiny.tokenizer, LayoutConfig()
    for ex in examples:
        targets = [prompts.answer_text_ids(tok, layout, a) for a in ex.answers]
        assert [answer_ids(tok, layout, a, 64)[0][:-1] for a in ex.answers] == [list(t) for t in targets]
        assert gold_first_ids(tiny, ex, layout) == {t[0] for t in targets}
    assert prompts.answer_text(layout, "  red ") == " red"


# The ids every prompt had before seqcomp.prompts existed, for conftest's first example (tiny tokenizer).
CONTEXT_LABEL = [490, 29]
PASSAGE = [456, 347, 300, 336, 17, 456, 337, 265, 391, 86, 350, 450, 349, 17]  # " The key is red. The river ..."
QUESTION = [358, 474, 29, 446, 300, 450, 347, 34]  # "Question: What is the key?"
NEWLINE, ANCHOR = [202], [36, 81, 386, 276, 29]


def test_pinned_prompt_ids(tiny, examples):
    tok, ex = tiny.tokenizer, examples[0]
    ids = lambda segs: [(s.name, list(s.ids)) for s in segs]  # noqa: E731
    raw = CONTEXT_LABEL + PASSAGE + NEWLINE + QUESTION + NEWLINE + ANCHOR
    assert ids(baseline_prefix("text", tok, ex)) == [("prompt", raw)]
    assert ids(baseline_prefix("none", tok, ex)) == [("prompt", QUESTION + NEWLINE + ANCHOR)]
    assert ids(baseline_prefix("truncate", tok, ex, budget=3)) == [
        ("context-label", CONTEXT_LABEL), ("context", PASSAGE[:3]), ("question", NEWLINE + QUESTION + NEWLINE + ANCHOR)]
    assert ids(baseline_prefix("fewshot", tok, ex, shots=[ex]))[1] == ("prompt", raw)
    assert ids(_trained_heads(tiny, [ex], "truncate", 4)[0]) == [
        ("context-label", CONTEXT_LABEL), ("context", PASSAGE[:4]), ("context-end", NEWLINE)]
    assert ids(_trained_heads(tiny, [ex], "text", 4)[0]) == [("context", CONTEXT_LABEL + PASSAGE + NEWLINE)]
    assert list(prompts.answer_text_ids(tok, LayoutConfig(), ex.answers[0])) == [336]  # " red"


@pytest.mark.slow
def test_pinned_prompt_ids_smollm2(examples):
    from seqcomp.lm import load_lm

    tok, ex = load_lm().tokenizer, examples[0]
    raw = [17548, 42, 378, 1646, 314, 2382, 30, 378, 4626, 7313, 288, 260, 2240, 30, 198,
           17872, 42, 1812, 314, 260, 1646, 47, 198, 21350, 42]
    assert list(baseline_prefix("text", tok, ex)[0].ids) == raw
    assert [list(s.ids) for s in baseline_prefix("truncate", tok, ex, budget=3)] == [
        [17548, 42], [378, 1646, 314], [198, 17872, 42, 1812, 314, 260, 1646, 47, 198, 21350, 42]]
    assert list(prompts.answer_text_ids(tok, LayoutConfig(), ex.answers[0])) == [2382]
