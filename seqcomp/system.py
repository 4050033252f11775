"""A trainable system: what turns examples into one-layout prefixes for the frozen LM.

``compressor.kind`` picks the head of the prefix: ``query``/``pool``/``encoder`` compressed slots, ``text`` the full
context as text (the fair trained ceiling), ``truncate`` the first M context tokens as text (the trained
truncation baseline), ``select`` the M context tokens that best match the question (trained selection); the text
heads are the zero-shot prompts of ``seqcomp.prompts`` without the question. Every kind shares the rest of the
layout and the trainable soft anchor, so the comparison between them is fair. Nothing derived from a gold answer
reaches a prefix (bug B6): prefixes are a function of context and question only.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .compressor import Compressor
from .config import CompressorConfig, ExperimentConfig
from .data import SquadExample
from .encoder import EncoderCompressor
from .layout import anchor_ids, build_prefix
from .lm import LM
from .pretrain import task_vectors
from .prompts import Segment, context_prefix, kept_context_prefix
from .sources import source_text, source_vectors, text_source_ids


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
        # one learned vector per pretraining task, only when the config has a pretraining stage
        self.task_vectors = task_vectors(lm, config.pretrain) if config.pretrain.passages else None

    def compress(self, lm: LM, examples: Sequence[SquadExample]) -> torch.Tensor:
        """Compressed slots [B, M, D] (fp32) for the examples' contexts."""
        if self.compressor is None:
            raise ValueError(f"compressor.kind '{self.config.compressor.kind}' has no compressed slots")
        return self.compress_texts(lm, [source_text(e, self.config.compressor) for e in examples])

    def compress_texts(self, lm: LM, texts: Sequence[str], m: int | None = None) -> torch.Tensor:
        """Compressed slots [B, M, D] (fp32) of plain texts (``m``: another slot count, pool/encoder only)."""
        if self.compressor is None:
            raise ValueError(f"compressor.kind '{self.config.compressor.kind}' has no compressed slots")
        cc = self.config.compressor
        # each distinct text is compressed once: SQuAD asks ~5 questions per passage, and evaluation batches
        # group a passage's questions (seqcomp.evaluate.predict), so this divides the compressor's work
        unique = list(dict.fromkeys(texts))
        ids, mask, _ = text_source_ids(lm, unique, self.config.data.max_source_tokens)
        if cc.kind == "encoder":  # trained on tokens, so nothing can come from the frozen feature cache
            slots = self.compressor(ids, mask, lm.autocast(), m=m)
        else:
            slots = self.compressor(source_vectors(lm, ids, mask, cc), mask, m=m)
        if len(unique) == len(texts):
            return slots
        row = {t: i for i, t in enumerate(unique)}
        return slots[torch.tensor([row[t] for t in texts], device=slots.device)]

    def heads(self, lm: LM, examples: Sequence[SquadExample]) -> tuple[list[list[Segment]], torch.Tensor | None]:
        """The head of each prefix, and the compressed slots [B, M, D] it holds (None for text systems)."""
        kind = self.config.compressor.kind
        if self.compressor is not None:
            slots = self.compress(lm, examples)
            return [[Segment("compressed", vectors=slots[i])] for i in range(len(examples))], slots
        if kind == "text":
            return [context_prefix(lm.tokenizer, e, with_question=False) for e in examples], None
        m = self.config.compressor.m
        return [kept_context_prefix(kind, lm.tokenizer, e, m, with_question=False) for e in examples], None

    def prefixes(self, lm: LM, examples: Sequence[SquadExample]) -> list[list[Segment]]:
        """The prefix every use shares: training, teacher forcing, KD student and generation."""
        return self(lm, examples)[0]

    def forward(self, lm: LM, examples: Sequence[SquadExample] = (), *, texts: Sequence[str] | None = None,
                m: int | None = None) -> tuple[list[list[Segment]] | None, torch.Tensor | None]:
        """Calling the module (as ``accelerate``/DDP requires for gradient sync) builds the prefixes; the
        compressed slots come along for the anti-collapse losses. With ``texts`` (the pretraining stage) it
        only compresses them (into ``m`` slots if given) and returns ``(None, slots)``."""
        if texts is not None:
            return None, self.compress_texts(lm, texts, m)
        heads, slots = self.heads(lm, examples)
        return [build_prefix(lm.tokenizer, self.config.layout, head, e.question, self.soft_anchor)
                for head, e in zip(heads, examples)], slots

    def teacher_prefixes(self, lm: LM, examples: Sequence[SquadExample]) -> list[list[Segment]]:
        """The KD teacher: the same frozen LM reading the full context as text, with the text anchor."""
        return [build_prefix(lm.tokenizer, self.config.layout, context_prefix(lm.tokenizer, e, with_question=False),
                             e.question, None) for e in examples]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What QA training updates (the pretraining stage's task vectors are not used there)."""
        return [p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("task_vectors.")]


def _compressor(cc: CompressorConfig, lm: LM) -> nn.Module | None:
    """The trainable compressor of a compressing kind (None for the text kinds)."""
    if cc.kind == "encoder":
        return EncoderCompressor(cc, lm)
    return Compressor(cc, lm.hidden_size, lm.embedding_rms) if cc.kind in ("query", "pool") else None
