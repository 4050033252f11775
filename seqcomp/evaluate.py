"""Generation + cleaning + scoring for any system that turns examples into prefixes.

Baselines and trained compressors go through the same ``predict`` and ``score``, so their numbers are
comparable by construction: same generation length, same stop tokens, same cleaning, same metric.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .config import GenerationConfig, LayoutConfig
from .data import SquadExample
from .generation import Generation, generate
from .layout import build_lm_input, end_of_answer_ids, split_shared_heads
from .lm import LM
from .metrics import Summary, exact_match, f1, summarize
from .prompts import Segment, answer_text_ids

PrefixFn = Callable[[Sequence[SquadExample]], list[list[Segment]]]


def predict(lm: LM, examples: Sequence[SquadExample], prefix_fn: PrefixFn, gen: GenerationConfig,
            layout: LayoutConfig, via_input_ids: bool = False, desc: str = "generating",
            progress: bool = True) -> list[Generation]:
    """Greedy answers for ``examples`` in batches of ``gen.batch_size`` (order preserved).

    Batches group questions of similar passage length, so little of a batch's prefill is padding, and a
    passage's questions sit together, so a compressor reads each passage once per batch and the frozen LM
    reads each shared head (the passage's slots or text) once (``split_shared_heads``).
    """
    eoa = end_of_answer_ids(lm.tokenizer, layout)
    out: list[Generation | None] = [None] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].context), examples[i].context,
                                                       len(examples[i].question)))
    batches = [order[i:i + gen.batch_size] for i in range(0, len(order), gen.batch_size)]
    for idx in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        with torch.no_grad():
            prefixes = prefix_fn([examples[i] for i in idx])
            # a head several rows share (few-shot examples, a passage) is read once; ids embedded by the LM's own
            # table are what the model's forward does with them, so this holds for the token-id path too
            shared = split_shared_heads(lm.embed, prefixes, pad_id=lm.pad_id)
            if shared is None and via_input_ids:
                ids, mask = _left_pad_ids(prefixes, lm.pad_id, lm.device)
                gens = generate(lm, input_ids=ids, attention_mask=mask, max_new_tokens=gen.max_new_tokens,
                                end_of_answer=layout.end_of_answer, end_of_answer_ids=eoa)
            else:
                batch = shared or build_lm_input(lm.embed, prefixes, pad_id=lm.pad_id)
                gens = generate(lm, batch, max_new_tokens=gen.max_new_tokens,
                                end_of_answer=layout.end_of_answer, end_of_answer_ids=eoa)
        for i, g in zip(idx, gens):
            out[i] = g
    return out  # type: ignore[return-value]


def _left_pad_ids(prefixes: list[list[Segment]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = []
    for prefix in prefixes:
        if any(s.ids is None for s in prefix):
            raise ValueError("generation from token ids needs text-only prefixes (no vector segments)")
        rows.append([t for s in prefix for t in s.ids])
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def gold_first_ids(lm: LM, example: SquadExample, layout: LayoutConfig) -> set[int]:
    """First token of every gold answer as the model would emit it after the anchor."""
    return {answer_text_ids(lm.tokenizer, layout, a)[0] for a in example.answers if a.strip()}


def score(lm: LM, examples: Sequence[SquadExample], gens: Sequence[Generation],
          layout: LayoutConfig) -> tuple[list[dict], Summary]:
    """Per-question records (the ``predictions.jsonl`` rows) and the summary with bootstrap CIs."""
    records = []
    for ex, g in zip(examples, gens):
        golds = list(ex.answers)
        first_ok = g.first_token_id in gold_first_ids(lm, ex, layout)
        records.append({
            "id": ex.id, "title": ex.title, "question": ex.question, "context": ex.context, "golds": golds,
            "prediction": g.answer, "raw": g.raw,
            "em": exact_match(g.answer, golds), "f1": f1(g.answer, golds),
            "first_token": lm.tokenizer.decode([g.first_token_id]) if g.token_ids else "",
            "first_token_correct": bool(first_ok),
            "first_top5": [[t, p] for t, p in g.first_top5],
            "tokens": [lm.tokenizer.decode([t]) for t in g.token_ids],
            "token_logprobs": g.token_logprobs,
            "n_pred_tokens": g.n_answer_tokens,
        })
    summary = summarize([r["em"] for r in records], [r["f1"] for r in records],
                        first_token_correct=[r["first_token_correct"] for r in records],
                        pred_tokens=[r["n_pred_tokens"] for r in records])
    return records, summary
