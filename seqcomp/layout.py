"""The one LM input layout, used by training, teacher forcing, distillation and generation alike.

A row is ``[prefix segments][answer tokens][end-of-answer]``; the prefix is, for a compressor,
``[compressed slots][BOS?][question text?][anchor]`` and, for text systems, text segments. Rows are
LEFT-padded (the one padding convention): every row ends at the last column, so the answer occupies the
last ``len(answer)`` columns in the student *and* in a teacher reading the full text, which aligns
distillation targets by construction (bug B5). ``labels`` hold each answer token at its own position;
Hugging Face models shift them internally, so nothing here shifts (bug B1). The prefix that generation
sees is built by the same call with ``answers=None`` (bug B2); ``split_shared_heads`` only cuts a generation
batch's prefixes into the head several rows share and each row's tail, and builds both with that call. The
text of every prompt and answer, and the ``Segment`` a prefix is made of, come from ``seqcomp.prompts``; this
module arranges, embeds and pads them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch

from .config import LayoutConfig
from .prompts import ANSWER_LABEL, LayoutError, Segment, answer_text_ids, text_ids

IGNORE = -100


@dataclass
class LMInput:
    """A padded batch ready for ``model(inputs_embeds=..., attention_mask=..., position_ids=..., labels=...)``."""

    inputs_embeds: torch.Tensor  # [B, L, D]
    attention_mask: torch.Tensor  # [B, L], 0 on left padding
    position_ids: torch.Tensor  # [B, L], counting from each row's first real position
    labels: torch.Tensor | None  # [B, L], unshifted; IGNORE outside answers
    prefix_lengths: list[int]
    answer_lengths: list[int]  # including the end-of-answer token; 0 for generation
    segments: list[list[tuple[str, int]]]  # per row: (segment name, length), answer last

    @property
    def width(self) -> int:
        return self.inputs_embeds.shape[1]

    def answer_logit_positions(self, k: int | None = None) -> torch.Tensor:
        """Index [B, K] of the positions whose logits predict answer tokens 0..K-1 (-1 where absent)."""
        k = max(self.answer_lengths) if k is None else k
        out = torch.full((len(self.answer_lengths), k), -1, dtype=torch.long)
        for row, n in enumerate(self.answer_lengths):
            start = self.width - n - 1
            for j in range(min(k, n)):
                out[row, j] = start + j
        return out


def build_lm_input(embed: torch.nn.Embedding, prefixes: Sequence[Sequence[Segment]],
                   answers: Sequence[Sequence[int]] | None = None, pad_id: int = 0) -> LMInput:
    """Embed and left-pad ``prefix (+ answer)`` rows; the only place an LM input is assembled."""
    if answers is not None and len(answers) != len(prefixes):
        raise LayoutError(f"{len(prefixes)} prefixes but {len(answers)} answers")
    device, dtype = embed.weight.device, embed.weight.dtype
    rows, labels, shapes, prefix_lengths, answer_lengths = [], [], [], [], []
    for i, prefix in enumerate(prefixes):
        segs = list(prefix)
        answer = list(answers[i]) if answers is not None else []
        if answer:
            segs.append(Segment("answer", ids=tuple(answer)))
        parts = [_embed_segment(embed, s, device) for s in segs if len(s) > 0]
        if not parts:
            raise LayoutError(f"row {i} is empty: a prefix needs at least one segment")
        rows.append(torch.cat([p.to(dtype) for p in parts], dim=0))  # fp32 trainable vectors -> the LM's dtype
        n_prefix = sum(len(s) for s in prefix)
        prefix_lengths.append(n_prefix)
        answer_lengths.append(len(answer))
        labels.append([IGNORE] * n_prefix + answer)
        shapes.append([(s.name, len(s)) for s in segs])
    width = max(r.shape[0] for r in rows)
    dim = rows[0].shape[1]
    batch = len(rows)
    inputs = embed(torch.full((batch, width), pad_id, dtype=torch.long, device=device)).detach().clone()
    mask = torch.zeros(batch, width, dtype=torch.long, device=device)
    label_t = torch.full((batch, width), IGNORE, dtype=torch.long, device=device)
    padded = []
    for i, row in enumerate(rows):
        n = row.shape[0]
        if row.shape[1] != dim:
            raise LayoutError(f"row {i} has vectors of width {row.shape[1]}, expected {dim}")
        padded.append(torch.cat([inputs[i, : width - n], row], dim=0))
        mask[i, width - n:] = 1
        label_t[i, width - n:] = torch.tensor(labels[i], dtype=torch.long)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return LMInput(inputs_embeds=torch.stack(padded), attention_mask=mask, position_ids=position_ids,
                   labels=label_t if answers is not None else None, prefix_lengths=prefix_lengths,
                   answer_lengths=answer_lengths, segments=shapes)


@dataclass
class SharedHeads:
    """A batch of prefixes split for generation into heads that several rows share (a passage's compressed slots
    or text, and what follows it identically) and each row's own tail (question, anchor), both assembled by
    ``build_lm_input``. Reading a shared head once and copying its KV cache to each of its rows gives the same
    attention and positions as the whole left-padded row (``seqcomp.generation.generate``)."""

    heads: LMInput  # one row per distinct head
    tails: LMInput  # one row per prefix
    head_of: torch.Tensor  # [B]: the head row of each prefix

    def tail_input(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention mask [B, head width + tail width] and position ids [B, tail width] of the tails read
        after their heads' KV cache: a tail's left padding sits between head and tail, masked, and its tokens
        continue its head's positions, as in the whole left-padded row."""
        head_mask = self.heads.attention_mask[self.head_of]
        tail_mask = self.tails.attention_mask
        positions = head_mask.sum(-1, keepdim=True) + (tail_mask.cumsum(-1) - 1).clamp(min=0)
        return torch.cat([head_mask, tail_mask], dim=1), positions


def split_shared_heads(embed: torch.nn.Embedding, prefixes: Sequence[Sequence[Segment]],
                       pad_id: int = 0) -> SharedHeads | None:
    """Split prefixes into heads and own tails: each prefix's head is the longest run of leading segments (short of
    its last segment) that another prefix starts with too, compared by ids or vector values; prefixes with equal
    heads share one. None when no two prefixes share a first segment, or a prefix is a single segment."""
    if any(len(p) < 2 for p in prefixes):
        return None
    prints = [[_fingerprint(seg) for seg in prefix[:-1]] for prefix in prefixes]
    starts = Counter(tuple(fp[:k]) for fp in prints for k in range(1, len(fp) + 1))
    keys = []
    for fp in prints:
        k = next((k for k in range(len(fp), 0, -1) if starts[tuple(fp[:k])] > 1), 0)
        keys.append(tuple(fp[:k]) if k else None)
    if not any(keys):
        return None
    heads, tails, head_of, index = [], [], [], {}
    for i, (prefix, key) in enumerate(zip(prefixes, keys)):
        group = key or ("own", i)  # a prefix sharing nothing: its own head, all but its last segment
        k = len(key) if key else len(prefix) - 1
        if group not in index:
            index[group] = len(heads)
            heads.append(list(prefix[:k]))
        head_of.append(index[group])
        tails.append(list(prefix[k:]))
    return SharedHeads(heads=build_lm_input(embed, heads, pad_id=pad_id),
                       tails=build_lm_input(embed, tails, pad_id=pad_id),
                       head_of=torch.tensor(head_of, device=embed.weight.device))


def _fingerprint(seg: Segment) -> tuple:
    if seg.ids is not None:
        return ("ids", seg.ids)
    vectors = seg.vectors.detach()
    return ("vectors", tuple(vectors.shape), vectors.float().cpu().numpy().tobytes())


def _embed_segment(embed: torch.nn.Embedding, seg: Segment, device: torch.device) -> torch.Tensor:
    if seg.ids is not None:
        return embed(torch.tensor(seg.ids, dtype=torch.long, device=device))
    return seg.vectors.to(device)


# --- the pieces of a prefix, from the layout config -------------------------------------------------


def end_of_answer_ids(tokenizer, layout: LayoutConfig) -> tuple[int, ...]:
    """The trained end-of-answer token (empty when the layout has none: the diagnosed bug B4)."""
    if not layout.end_of_answer:
        return ()
    ids = text_ids(tokenizer, layout.end_of_answer)
    if len(ids) != 1:
        raise LayoutError(f"layout.end_of_answer {layout.end_of_answer!r} tokenizes to {len(ids)} tokens {ids}; "
                          "generation stops on a single token, so choose a string that is one token (e.g. '\\n')")
    return ids


def anchor_ids(tokenizer, layout: LayoutConfig) -> tuple[int, ...]:
    if not layout.anchor:
        return ()
    ids = text_ids(tokenizer, layout.anchor)
    if not ids:
        raise LayoutError(f"layout.anchor {layout.anchor!r} tokenizes to nothing; "
                          f"use visible text like {ANSWER_LABEL!r}")
    return ids


def answer_ids(tokenizer, layout: LayoutConfig, answer: str, max_tokens: int) -> tuple[list[int], bool]:
    """Answer token ids (truncated to ``max_tokens``) + end-of-answer; returns (ids, was_truncated)."""
    ids = list(answer_text_ids(tokenizer, layout, answer))
    truncated = len(ids) > max_tokens
    return ids[:max_tokens] + list(end_of_answer_ids(tokenizer, layout)), truncated


def build_prefix(tokenizer, layout: LayoutConfig, head: Sequence[Segment], question: str,
                 soft_anchor: torch.Tensor | None = None) -> list[Segment]:
    """``[head][BOS?][question?][anchor]``: head is the compressed slots or a text segment.

    ``soft_anchor`` (trainable vectors initialised from the anchor's tokens) replaces the anchor ids
    when the layout trains the anchor; its length must equal the anchor's token count.
    """
    segs = list(head)
    if layout.bos:
        if tokenizer.bos_token_id is None:
            raise LayoutError("layout.bos is true but the tokenizer has no BOS token; set layout.bos=false")
        segs.append(Segment("bos", ids=(tokenizer.bos_token_id,)))
    if layout.question_as_text:
        segs.append(Segment("question", ids=text_ids(tokenizer, layout.question_template.format(question=question))))
    ids = anchor_ids(tokenizer, layout)
    if ids:
        if soft_anchor is not None:
            if soft_anchor.shape[0] != len(ids):
                raise LayoutError(f"soft anchor has {soft_anchor.shape[0]} vectors, anchor has {len(ids)} tokens")
            segs.append(Segment("anchor", vectors=soft_anchor))
        else:
            segs.append(Segment("anchor", ids=ids))
    return segs
