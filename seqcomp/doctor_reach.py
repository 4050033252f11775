"""Doctor checks that what the answer needs reaches the frozen LM, whole (issue 16).

Settings that are each valid alone can together hide the question or cut the passage before the LM
sees it (``layout.question_as_text=false`` without ``compress_question``, a ``data.max_source_tokens`` at
the budget M, ...), and a green doctor on such a setup costs a training run. Each check reads the text
the real code paths hand over on real rows: ``system.prefixes``, the compressor's source rows from
``source_ids`` and the truncation baseline's ``baseline_prefix("truncate", ...)``. A text is "seen" when it occurs,
case and whitespace aside, in what a system shows the LM; an answer that also occurs earlier in the
passage counts as seen, so the answer shares are upper bounds.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .baselines import baseline_prefix
from .config import ExperimentConfig, LayoutConfig
from .data import SquadExample
from .checks import Check
from .layout import build_prefix
from .lm import LM
from .prompts import Segment, text_ids
from .slices import Slices
from .sources import source_ids
from .system import CompressionSystem

COMPRESSED_KINDS = ("query", "pool", "encoder")  # M vectors from the source window the compressor reads
FULL_TEXT_KINDS = ("text",)  # the whole passage as text
# M passage tokens as text, the baselines at the budget; a kind whose prefix holds them as token ids belongs here
BUDGET_TEXT_KINDS = ("truncate", "select")
KNOWN_KINDS = COMPRESSED_KINDS + FULL_TEXT_KINDS + BUDGET_TEXT_KINDS


def reach_checks(config: ExperimentConfig, lm: LM, system: CompressionSystem, slices: Slices) -> list[Check]:
    """Every reach check on the test slice: the questions a run reports on."""
    test = list(slices.test)
    return [
        check_layout_text_survives(config, lm, test),
        check_question_reaches_lm(config, lm, system, test),
        check_compressor_reads_more_than_truncation(config, lm, test),
        check_answer_seen(config, lm, system, test),
        check_fits_context_window(config, lm, system, test),
    ]


# --- what a system shows the LM, as text ----------------------------------------------------------


def _norm(text: str) -> str:
    """Case-folded and without whitespace: tokenizers differ in how they decode spaces, not in the words."""
    return "".join(text.split()).casefold()


def decode(lm: LM, ids: Sequence[int]) -> str:
    return lm.tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)


def prefix_text(lm: LM, prefix: Sequence[Segment]) -> str:
    """Every token-id segment of a prefix decoded; compressed slots and a trained anchor are vectors."""
    return "".join(decode(lm, s.ids) for s in prefix if s.ids is not None)


@torch.no_grad()
def prefixes_without_slots(config: ExperimentConfig, lm: LM, system: CompressionSystem,
                           examples: Sequence[SquadExample]) -> list[list[Segment]]:
    """Each row's prefix as the system builds it, minus query/pool slots (vectors, no text): the rest of theirs
    is ``build_prefix``'s, as in ``CompressionSystem.forward``, so the compressor need not run on every row."""
    if config.compressor.kind in COMPRESSED_KINDS:
        return [build_prefix(lm.tokenizer, config.layout, [], e.question, system.soft_anchor) for e in examples]
    return system.prefixes(lm, examples)


def source_windows(config: ExperimentConfig, lm: LM, examples: Sequence[SquadExample]) -> list[str]:
    """The text each compressor reads: the rows ``source_vectors`` embeds, after the max_source_tokens cut."""
    ids, mask, _ = source_ids(lm, examples, config.compressor, config.data.max_source_tokens)
    return [decode(lm, row[keep.bool()].tolist()) for row, keep in zip(ids.cpu(), mask.cpu())]


def truncation_texts(lm: LM, examples: Sequence[SquadExample], budget: int) -> list[str]:
    """What the truncation baseline shows the LM at budget M."""
    return [prefix_text(lm, baseline_prefix("truncate", lm.tokenizer, e, budget)) for e in examples]


def seen_texts(config: ExperimentConfig, lm: LM, system: CompressionSystem,
               examples: Sequence[SquadExample]) -> list[str]:
    """The passage text each row shows the LM: the compressor's source window, or the prefix as text."""
    if config.compressor.kind in COMPRESSED_KINDS:
        return source_windows(config, lm, examples)
    return [prefix_text(lm, p) for p in prefixes_without_slots(config, lm, system, examples)]


def seen_share(texts: Sequence[str], examples: Sequence[SquadExample], passage: bool = False) -> tuple[int, int]:
    """(gold answers, or whole passages, found in their row's text; how many there are)."""
    wanted = [[e.context] if passage else list(e.answers) for e in examples]
    hits = [_norm(w) in _norm(t) for t, ws in zip(texts, wanted) for w in ws]
    return sum(hits), len(hits)


def _pct(hit: int, n: int) -> str:
    return f"{100 * hit / max(n, 1):.1f}% ({hit}/{n})"


def _unknown_kind(name: str, kind: str) -> Check | None:
    """A kind these checks do not know fails: passing it would be a guess about what the LM sees."""
    if kind in KNOWN_KINDS:
        return None
    return Check(name, False, f"compressor.kind {kind!r} is unknown to the reach checks",
                 "the doctor cannot tell what a new kind shows the LM, so it will not pass it unchecked",
                 f"add '{kind}' to COMPRESSED_KINDS, FULL_TEXT_KINDS or BUDGET_TEXT_KINDS in seqcomp/doctor_reach.py")


# --- the checks -------------------------------------------------------------------------------------


def check_layout_text_survives(config: ExperimentConfig, lm: LM, examples: Sequence[SquadExample]) -> Check:
    """Layout text is only a label for the LM if its tokens decode back to it (no dropped or unknown characters)."""
    layout = config.layout
    pieces = {"layout.question_template": layout.question_template.format(question=examples[0].question)
              if layout.question_as_text else "", "layout.anchor": layout.anchor,
              "pretrain.marker": config.pretrain.marker if config.pretrain.passages else ""}
    decoded = {key: decode(lm, text_ids(lm.tokenizer, text)) for key, text in pieces.items() if text}
    bad = [key for key, text in decoded.items() if _norm(text) != _norm(pieces[key])]
    detail = "; ".join(f"{key} {pieces[key]!r} decodes to {decoded[key]!r}" for key in bad)
    same = f"{', '.join(decoded)} decode back to themselves" if decoded else "no layout text to check"
    return Check("layout text survives the tokenizer", not bad, detail or same,
                 "the tokenizer turns a label, the anchor or the marker into nothing or unknown tokens, so the LM "
                 "never reads the text the layout means it to", "use text the model's tokenizer keeps (plain "
                 f"ASCII such as {LayoutConfig().question_template!r} and {LayoutConfig().anchor!r}), or a model whose "
                 "tokenizer has it")


def check_question_reaches_lm(config: ExperimentConfig, lm: LM, system: CompressionSystem,
                              examples: Sequence[SquadExample]) -> Check:
    """Every row: unlike an answer cut by the budget, a question lost on the way is always avoidable."""
    name, cc = "question reaches the LM", config.compressor
    if bad := _unknown_kind(name, cc.kind):
        return bad
    texts = [prefix_text(lm, p) for p in prefixes_without_slots(config, lm, system, examples)]
    windows = source_windows(config, lm, examples) if cc.kind in COMPRESSED_KINDS else [""] * len(examples)
    as_text = [_norm(e.question) in _norm(t) for e, t in zip(examples, texts)]
    compressed = [_norm(e.question) in _norm(w) for e, w in zip(examples, windows)]
    reached = sum(a or c for a, c in zip(as_text, compressed))
    return Check(name, reached == len(examples),
                 f"{reached}/{len(examples)} questions reach the LM: {sum(as_text)} as text in the prefix, "
                 f"{sum(compressed)} inside what the compressor reads (kind '{cc.kind}', layout.question_as_text="
                 f"{config.layout.question_as_text}, compressor.compress_question={cc.compress_question})",
                 "the LM must answer a question it never sees: it is neither text in the prefix nor inside the "
                 "compressor's source window (never put there, or cut by data.max_source_tokens)",
                 "set layout.question_as_text=true (compressor.compress_question=true also works for query/pool "
                 "if data.max_source_tokens holds passage + question)")


def check_compressor_reads_more_than_truncation(config: ExperimentConfig, lm: LM,
                                                examples: Sequence[SquadExample]) -> Check:
    """Compression only earns its keep over truncation at M if the compressor reads more than M passage tokens."""
    name, kind, m, window = ("compressor reads more than truncation keeps", config.compressor.kind,
                             config.compressor.m, config.data.max_source_tokens)
    if bad := _unknown_kind(name, kind):
        return bad
    if kind not in COMPRESSED_KINDS:
        return Check(name, True, f"not applicable: '{kind}' shows passage tokens as text and compresses nothing")
    windows, kept = source_windows(config, lm, examples), truncation_texts(lm, examples, m)
    passage_tokens = [len(text_ids(lm.tokenizer, e.context)) for e in examples]
    read = sum(min(n, window) for n in passage_tokens)
    truncated = sum(min(n, m) for n in passage_tokens)
    ok = window > m and read > truncated
    return Check(name, ok,
                 f"window data.max_source_tokens={window} vs budget M={m}: passages whole in the window "
                 f"{_pct(*seen_share(windows, examples, passage=True))}, in M tokens "
                 f"{_pct(*seen_share(kept, examples, passage=True))}; gold answers in the window "
                 f"{_pct(*seen_share(windows, examples))}, in M tokens {_pct(*seen_share(kept, examples))}; "
                 f"passage tokens: {read} read by the compressor, {truncated} kept by truncation",
                 "a compressor that reads no more of the passage than truncation keeps at the same budget compresses "
                 "nothing: it can at best match the truncation baseline (a window at or below M, or passages that "
                 "all fit in M tokens)",
                 "set data.max_source_tokens well above compressor.m (default 384), or a smaller compressor.m")


def check_answer_seen(config: ExperimentConfig, lm: LM, system: CompressionSystem,
                      examples: Sequence[SquadExample]) -> Check:
    """The share of gold spans a system can read off caps its score; budgeted baselines report it, others must
    reach ``data.min_answer_coverage``."""
    name, kind, m = "gold answer inside what the LM sees", config.compressor.kind, config.compressor.m
    threshold = config.data.min_answer_coverage
    if bad := _unknown_kind(name, kind):
        return bad
    share = seen_share(seen_texts(config, lm, system, examples), examples)
    if kind in BUDGET_TEXT_KINDS:
        reference = _pct(*seen_share(truncation_texts(lm, examples, m), examples))
        return Check(name, True, f"'{kind}' keeps {m} passage tokens holding {_pct(*share)} of gold answers "
                     f"(zero-shot truncation at M: {reference}); a baseline at the budget, so "
                     f"data.min_answer_coverage={threshold} does not apply")
    where = (f"the compressor's source window (data.max_source_tokens={config.data.max_source_tokens})"
             if kind in COMPRESSED_KINDS else "the passage text")
    return Check(name, share[0] >= threshold * share[1],
                 f"{_pct(*share)} of gold answers inside {where}; required >= {100 * threshold:.0f}% "
                 "(data.min_answer_coverage)",
                 "answers outside what the system sees cannot be read off it: training teaches the LM to guess and "
                 "the score is capped by the share", "query/pool: raise data.max_source_tokens; text: the prefix "
                 "must hold the whole passage (seqcomp.system); or lower data.min_answer_coverage if the cut is meant")


def check_fits_context_window(config: ExperimentConfig, lm: LM, system: CompressionSystem,
                              examples: Sequence[SquadExample]) -> Check:
    """Rotary models read positions past their window without an error, garbled: the overflow is silent."""
    name, limit = "LM input fits the context window", lm.model.config.max_position_embeddings
    if bad := _unknown_kind(name, config.compressor.kind):
        return bad
    longest = {k: v for k, v in input_lengths(config, lm, system, examples).items() if v}
    over = [k for k, v in longest.items() if v > limit]
    return Check(name, not over,
                 f"longest {', '.join(f'{k} {v}' for k, v in longest.items())} tokens vs the LM's "
                 f"{limit} positions", "positions past the model's window are read garbled (or cut), so the "
                 f"end of a long input (question, anchor, answer) never reaches the LM intact: {', '.join(over)}",
                 "lower data.max_source_tokens or compressor.m, or use a model with a longer window")


@torch.no_grad()
def input_lengths(config: ExperimentConfig, lm: LM, system: CompressionSystem,
                  examples: Sequence[SquadExample]) -> dict[str, int]:
    """Longest input per LM pass: generation (prefix + new tokens), hidden-state source rows, KD teacher."""
    cc, extra = config.compressor, config.generation.max_new_tokens
    slots = cc.m if cc.kind in COMPRESSED_KINDS else 0
    prefix = max(slots + sum(len(s) for s in p) for p in prefixes_without_slots(config, lm, system, examples))
    source = 0
    if cc.kind == "encoder" or (cc.kind in COMPRESSED_KINDS and cc.source == "hidden"):  # rows through LM layers
        source = int(source_ids(lm, examples, cc, config.data.max_source_tokens)[1].sum(-1).max())
    teacher = 0
    if config.loss.kd_weight > 0 or config.loss.dense_kd_weight > 0:
        teacher = max(sum(len(s) for s in p) for p in system.teacher_prefixes(lm, examples))
        teacher += config.data.max_answer_tokens + 1
    return {"generation input": prefix + extra, "source rows": source, "KD teacher input": teacher}
