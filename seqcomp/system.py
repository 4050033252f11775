"""A trainable system: what turns examples into one-layout prefixes for the frozen LM.

``compressor.kind`` picks the head of the prefix: ``query``/``pool``/``encoder`` compressed slots, ``text`` the full
context as text (the fair trained ceiling), ``truncate`` the first M context tokens as text (the trained
truncation baseline), ``select`` the M context tokens that best match the question (trained selection). Every kind shares the rest of the layout and the trainable soft anchor, so the
comparison between them is fair. Nothing derived from a gold answer reaches a prefix (bug B6): prefixes
are a function of context and question only.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .compressor import Compressor
from .config import CompressorConfig, ExperimentConfig
from .data import SquadExample
from .encoder import EncoderCompressor
from .layout import Segment, anchor_ids, build_prefix, text_ids
from .lm import LM
from .selection import kept_context_ids
from .sources import source_ids, source_vectors


class CompressionSystem(nn.Module):
    def __init__(self, config: ExperimentConfig, lm: LM):
        super().__init__()
        self.config = config
        cc = config.compressor
        self.compressor = _compressor(cc, lm)
        ids = anchor_ids(lm.tokenizer, config.layout)
        self.soft_anchor = None
        if ids and config.layout.train_anchor:
            init = lm.embed(torch.tensor(ids, device=lm.device)).detach().float().clone()
            self.soft_anchor = nn.Parameter(init)
        self.last_n_truncated = 0

    def compress(self, lm: LM, examples: Sequence[SquadExample]) -> torch.Tensor:
        """Compressed slots [B, M, D] (fp32) for the examples' contexts."""
        if self.compressor is None:
            raise ValueError(f"compressor.kind '{self.config.compressor.kind}' has no compressed slots")
        cc, window = self.config.compressor, self.config.data.max_source_tokens
        if cc.kind == "encoder":  # trained on tokens, so nothing can come from the frozen feature cache
            ids, mask, self.last_n_truncated = source_ids(lm, examples, cc, window)
            return self.compressor(ids, mask, lm.autocast())
        src = source_vectors(lm, examples, cc, window)
        self.last_n_truncated = src.n_truncated
        return self.compressor(src.vectors, src.mask)

    def heads(self, lm: LM, examples: Sequence[SquadExample]) -> tuple[list[list[Segment]], torch.Tensor | None]:
        """The head of each prefix, and the compressed slots [B, M, D] it holds (None for text systems)."""
        kind = self.config.compressor.kind
        if self.compressor is not None:
            slots = self.compress(lm, examples)
            return [[Segment("compressed", vectors=slots[i])] for i in range(len(examples))], slots
        if kind == "text":
            return [[Segment("context", ids=text_ids(lm.tokenizer, f"Context: {e.context}\n"))]
                    for e in examples], None
        m = self.config.compressor.m
        return [[Segment("context-label", ids=text_ids(lm.tokenizer, "Context:")),
                 Segment("context", ids=tuple(kept_context_ids(kind, lm.tokenizer, e.context, e.question, m))),
                 Segment("context-end", ids=text_ids(lm.tokenizer, "\n"))] for e in examples], None

    def prefixes(self, lm: LM, examples: Sequence[SquadExample]) -> list[list[Segment]]:
        """The prefix every use shares: training, teacher forcing, KD student and generation."""
        return self(lm, examples)[0]

    def forward(self, lm: LM, examples: Sequence[SquadExample]) -> tuple[list[list[Segment]], torch.Tensor | None]:
        """Calling the module (as ``accelerate``/DDP requires for gradient sync) builds the prefixes; the
        compressed slots come along for the anti-collapse losses."""
        heads, slots = self.heads(lm, examples)
        return [build_prefix(lm.tokenizer, self.config.layout, head, e.question, self.soft_anchor)
                for head, e in zip(heads, examples)], slots

    def teacher_prefixes(self, lm: LM, examples: Sequence[SquadExample]) -> list[list[Segment]]:
        """The KD teacher: the same frozen LM reading the full context as text, with the text anchor."""
        return [build_prefix(lm.tokenizer, self.config.layout,
                             [Segment("context", ids=text_ids(lm.tokenizer, f"Context: {e.context}\n"))],
                             e.question, None) for e in examples]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def _compressor(cc: CompressorConfig, lm: LM) -> nn.Module | None:
    """The trainable compressor of a compressing kind (None for the text kinds)."""
    if cc.kind == "encoder":
        return EncoderCompressor(cc, lm)
    return Compressor(cc, lm.hidden_size, lm.embedding_rms) if cc.kind in ("query", "pool") else None
