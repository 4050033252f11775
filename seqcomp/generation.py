"""Batched greedy generation from an ``LMInput`` (or plain token ids): transformers' greedy search, minus finished rows.

Generation stops at the end-of-answer token or any token containing a newline, and reports what
the inspectors need: the raw text, the cleaned answer, token ids, per-token log-probabilities and the
first step's top-5 candidates.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import DynamicCache

from .layout import LMInput, SharedHeads
from .lm import LM, attention
from .metrics import clean_answer


@dataclass
class Generation:
    raw: str  # decoded new tokens up to and including the stop token
    answer: str  # after the one cleaning function
    token_ids: list[int]
    token_logprobs: list[float]
    first_top5: list[tuple[str, float]] = field(default_factory=list)  # first step: (token, probability)
    stopped: bool = False  # ended on a stop token (else it ran out of max_new_tokens)

    @property
    def n_answer_tokens(self) -> int:
        """Generated tokens before the stop token."""
        return len(self.token_ids) - int(self.stopped)

    @property
    def first_token_id(self) -> int | None:
        return self.token_ids[0] if self.token_ids else None


@functools.lru_cache(maxsize=8)
def _newline_ids(tokenizer) -> tuple[int, ...]:
    vocab = tokenizer.get_vocab()
    return tuple(sorted(i for i in vocab.values() if "\n" in tokenizer.decode([i])))


def stop_ids(lm: LM, end_of_answer_ids: Sequence[int] = ()) -> list[int]:
    """Tokens that end an answer: the end-of-answer token, every newline token, and EOS."""
    ids = set(end_of_answer_ids) | set(_newline_ids(lm.tokenizer))
    if lm.tokenizer.eos_token_id is not None:
        ids.add(lm.tokenizer.eos_token_id)
    return sorted(ids)


@torch.no_grad()
def generate(lm: LM, batch: LMInput | SharedHeads | None = None, *, input_ids: torch.Tensor | None = None,
             attention_mask: torch.Tensor | None = None, max_new_tokens: int = 32,
             end_of_answer: str = "\n", end_of_answer_ids: Sequence[int] = ()) -> list[Generation]:
    """Greedy-decode one batch from embeddings (``batch``: an ``LMInput``, or ``SharedHeads`` whose shared heads are
    read once and their KV cache copied to each of their rows) or left-padded ``input_ids``.

    The loop is transformers' own greedy search (same positions, same cache, same argmax; a test holds it
    token-for-token equal to ``model.generate``) with one difference ``generate`` does not offer: rows that
    have emitted a stop token leave the batch (their KV cache rows are dropped), so a wide batch is not
    decoded to its longest answer at full width. Finished rows are pruned once they are a quarter of the
    live batch, which bounds the cache copies to a handful per batch.
    """
    cache = DynamicCache(config=lm.model.config)
    if isinstance(batch, SharedHeads):
        heads = batch.heads
        with lm.autocast(), attention(lm, training=False):
            lm.model(inputs_embeds=heads.inputs_embeds, attention_mask=heads.attention_mask,
                     position_ids=heads.position_ids, cache=cache, use_cache=True,
                     logits_to_keep=torch.tensor([-1], device=lm.device))
        cache.batch_select_indices(batch.head_of)  # each row gets its head's keys and values
        mask, positions = batch.tail_input()
        prefill = dict(inputs_embeds=batch.tails.inputs_embeds, attention_mask=mask, position_ids=positions)
    elif batch is not None:
        prefill = dict(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids)
        mask = batch.attention_mask
    else:
        mask = attention_mask
        prefill = dict(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    stops = stop_ids(lm, end_of_answer_ids)
    device, n_rows = lm.device, mask.shape[0]
    stop_t = torch.tensor(stops, device=device)
    tokens = torch.full((n_rows, max_new_tokens), lm.pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros(n_rows, max_new_tokens, device=device)
    lengths = torch.zeros(n_rows, dtype=torch.long, device=device)
    rows = torch.arange(n_rows, device=device)  # the original row of each live batch row
    finished = torch.zeros(n_rows, dtype=torch.bool, device=device)  # per live batch row
    with lm.autocast(), attention(lm, training=False):
        # the last column as an index tensor: a contiguous [B, 1, D] block for the output head at prefill (see
        # seqcomp.losses.last_positions), where the int 1 costs a [B, D, V] copy of the head on the CPU
        out = lm.model(**prefill, cache=cache, use_cache=True,
                       logits_to_keep=torch.tensor([-1], device=lm.device))
        positions = prefill["position_ids"][:, -1]
        first_top5 = None
        for step in range(max_new_tokens):
            step_logprobs = out.logits[:, -1].float().log_softmax(-1)
            best, token = step_logprobs.max(-1)
            if first_top5 is None:
                first_top5 = step_logprobs.exp().topk(5)
            live = ~finished
            tokens[rows[live], step] = token[live]
            logprobs[rows[live], step] = best[live]
            lengths[rows[live]] += 1
            finished = finished | torch.isin(token, stop_t)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            positions = positions + 1
            if int(finished.sum()) * 4 >= finished.numel():  # drop the finished rows from the batch
                keep = (~finished).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                rows, finished, token, mask, positions = (t[keep] for t in (rows, finished, token, mask, positions))
            out = lm.model(input_ids=token[:, None], attention_mask=mask, position_ids=positions[:, None],
                           cache=cache, use_cache=True)
    top_values, top_indices = first_top5.values.tolist(), first_top5.indices.tolist()
    tokens, logprobs, lengths = tokens.tolist(), logprobs.tolist(), lengths.tolist()
    stop_set = set(stops)
    results = []
    for row in range(n_rows):
        ids = tokens[row][:lengths[row]]
        top5 = [(lm.tokenizer.decode([i]), p) for p, i in zip(top_values[row], top_indices[row])]
        raw = lm.tokenizer.decode(ids, skip_special_tokens=False)
        results.append(Generation(raw=raw, answer=clean_answer(_strip_special(lm, ids), end_of_answer),
                                  token_ids=ids, token_logprobs=logprobs[row][:lengths[row]],
                                  first_top5=top5, stopped=bool(ids) and ids[-1] in stop_set))
    return results


def _strip_special(lm: LM, ids: list[int]) -> str:
    return lm.tokenizer.decode(ids, skip_special_tokens=True)
