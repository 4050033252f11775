"""Batched greedy generation from an ``LMInput`` (or plain token ids) with transformers' ``generate``.

Generation stops at the end-of-answer token or any token containing a newline, and reports what
the inspectors need: the raw text, the cleaned answer, token ids, per-token log-probabilities and the
first step's top-5 candidates.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .layout import LMInput
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


class _StepRecorder(LogitsProcessor):
    """Keeps, per decoding step, only what is reported: the greedy token's log-prob (and, at the first
    step, the top-5 probabilities), instead of a full-vocabulary logits tensor per step."""

    def __init__(self) -> None:
        self.logprobs: list[torch.Tensor] = []  # per step [B]
        self.first_top5: torch.return_types.topk | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        logprobs = scores.float().log_softmax(-1)
        self.logprobs.append(logprobs.max(-1).values)  # greedy: the chosen token is the argmax
        if self.first_top5 is None:
            self.first_top5 = logprobs.exp().topk(5)
        return scores


@torch.no_grad()
def generate(lm: LM, batch: LMInput | None = None, *, input_ids: torch.Tensor | None = None,
             attention_mask: torch.Tensor | None = None, max_new_tokens: int = 32,
             end_of_answer: str = "\n", end_of_answer_ids: Sequence[int] = ()) -> list[Generation]:
    """Greedy-decode one batch from embeddings (``batch``) or left-padded ``input_ids``."""
    stops = stop_ids(lm, end_of_answer_ids)
    recorder = _StepRecorder()
    # the last column as an index tensor: a contiguous [B, 1, D] block for the output head at prefill (see
    # seqcomp.losses.last_positions), where the default int 1 costs a [B, D, V] copy of the head on the CPU
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=stops,
                  pad_token_id=lm.pad_id, logits_processor=LogitsProcessorList([recorder]),
                  logits_to_keep=torch.tensor([-1], device=lm.device),
                  temperature=None, top_p=None, top_k=None)
    with lm.autocast(), attention(lm, training=False):
        if batch is not None:
            new = lm.model.generate(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, **kwargs)
        else:
            new = lm.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            new = new[:, input_ids.shape[1]:]
    logprobs = torch.stack(recorder.logprobs, dim=1).tolist()  # [B, T]
    top_values, top_indices = recorder.first_top5.values.tolist(), recorder.first_top5.indices.tolist()
    stop_set = set(stops)
    results = []
    for row in range(new.shape[0]):
        ids = []
        for t in new[row].tolist():
            ids.append(t)
            if t in stop_set:
                break
        top5 = [(lm.tokenizer.decode([i]), p) for p, i in zip(top_values[row], top_indices[row])]
        raw = lm.tokenizer.decode(ids, skip_special_tokens=False)
        results.append(Generation(raw=raw, answer=clean_answer(_strip_special(lm, ids), end_of_answer),
                                  token_ids=ids, token_logprobs=logprobs[row][:len(ids)], first_top5=top5,
                                  stopped=bool(ids) and ids[-1] in stop_set))
    return results


def _strip_special(lm: LM, ids: list[int]) -> str:
    return lm.tokenizer.decode(ids, skip_special_tokens=True)
