"""Source vectors a compressor reads: the frozen LM's token embeddings or its hidden states at a layer.

Token embeddings are a bag of words once pooled (lessons.md); hidden states are contextual. Only the
layers below ``source_layer`` run, so layer 6 of 30 costs a fifth of a full forward.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from .config import CompressorConfig
from .data import SquadExample
from .layout import text_ids
from .lm import LM


def source_text(example: SquadExample, cfg: CompressorConfig) -> str:
    """What is compressed: the context, or context + question as in the diagnosed experiment."""
    if cfg.compress_question:
        return f"{example.context}\n{example.question}"
    return example.context


def source_ids(lm: LM, examples: Sequence[SquadExample], cfg: CompressorConfig,
               max_tokens: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Token ids [B, S], mask and the number of cut rows of what the examples' compressor reads."""
    return text_source_ids(lm, [source_text(e, cfg) for e in examples], max_tokens)


def text_source_ids(lm: LM, texts: Sequence[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Right-padded token ids [B, S] of plain texts (cut to ``max_tokens``), their mask, and how many were cut."""
    rows = [list(text_ids(lm.tokenizer, t)) for t in texts]
    n_truncated = sum(len(r) > max_tokens for r in rows)
    rows = [r[:max_tokens] or [lm.pad_id] for r in rows]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), lm.pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids.to(lm.device), mask.to(lm.device), n_truncated


@torch.no_grad()
def source_vectors(lm: LM, ids: torch.Tensor, mask: torch.Tensor, cfg: CompressorConfig) -> torch.Tensor:
    """What a feature-reading compressor reads [B, S, D] (fp32): token embeddings or cached hidden states."""
    if cfg.source == "embeddings":
        return lm.embed(ids).float()
    rows = [cached_hidden_states(lm, ids[i, : int(mask[i].sum())], cfg.source_layer) for i in range(len(ids))]
    vectors = torch.zeros(ids.shape[0], ids.shape[1], lm.hidden_size, device=ids.device)
    for i, row in enumerate(rows):
        vectors[i, : row.shape[0]] = row.float()
    return vectors


def cached_hidden_states(lm: LM, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """Hidden states [S, D] of ONE passage (its real tokens only), computed once per (layer, passage).

    The frozen LM never changes, so a passage's source features are the same at every epoch and for every
    system that reads the same layer (``lm.feature_cache``, shared by every run in one process). Each
    passage is computed alone, so its features are a pure function of its tokens: a cached, a resumed and
    a fresh run read identical values whatever the batch composition.
    """
    key = (layer, tuple(ids.tolist()))
    if key not in lm.feature_cache:
        mask = torch.ones(1, ids.shape[0], dtype=torch.long, device=ids.device)
        lm.feature_cache[key] = hidden_states(lm, ids[None], mask, layer)[0].to(lm.dtype)
    return lm.feature_cache[key]


@torch.no_grad()
def hidden_states(lm: LM, ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    """Residual stream after ``layer`` decoder layers (0 = embeddings), running only those layers."""
    n_layers = lm.model.config.num_hidden_layers
    if layer > n_layers:
        raise ValueError(f"compressor.source_layer={layer} but the model has {n_layers} layers")
    with _first_layers(lm, layer), lm.autocast():
        out = lm.model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    return out.hidden_states[layer].float()


@contextlib.contextmanager
def _first_layers(lm: LM, layer: int):
    """Temporarily keep only the first ``layer`` (+1, whose output we ignore) decoder layers."""
    layers = lm.model.model.layers
    keep = min(layer + 1, len(layers))
    lm.model.model.layers = layers[:keep]
    try:
        yield
    finally:
        lm.model.model.layers = layers
