"""The LM itself as a trainable encoder (``compressor.kind = "encoder"``, issue 14).

Frozen features through one small block could not learn to write vectors the frozen LM reads (issue 14's
probes); the systems that work at 4-8x (ARC-Encoder, ICAE) train an encoder initialised from the LM's own
weights. This one is a copy of the frozen LM's token embeddings and first ``compressor.encoder_layers``
decoder layers, trained in full: fp32 master weights that run under the LM's autocast, sharing no tensor
with the frozen decoder. It reads the passage tokens (``sources.source_ids``: the same
``data.max_source_tokens`` window as the other compressors), causally or, with ``compressor.bidirectional``,
with every real token attending to every other (ARC-Encoder drops the causal mask). Its last layer's states
are mean-pooled over M contiguous chunks of each row's real tokens (pooling late beat memory tokens and
pooling early there), RMS-normalised, passed through a residual 2-layer MLP projector and scaled by
``Calibrate`` to the embedding RMS at init; the gain is learnable, so a trained encoder may move the scale.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from .compressor import Calibrate, pool_matrix
from .config import CompressorConfig
from .lm import LM


class EncoderCompressor(nn.Module):
    def __init__(self, cfg: CompressorConfig, lm: LM):
        super().__init__()
        base = lm.model.model
        if cfg.encoder_layers > len(base.layers):
            raise ValueError(f"compressor.encoder_layers={cfg.encoder_layers} but the model has "
                             f"{len(base.layers)} layers; copy at most that many")
        self.cfg = cfg
        self.embed_tokens = copy.deepcopy(base.embed_tokens)
        self.layers = copy.deepcopy(base.layers[: cfg.encoder_layers])
        self.rotary_emb = copy.deepcopy(base.rotary_emb)
        # eager attention adds our own 4D mask as it is; the frozen LM may switch kernels for generation
        attention = copy.deepcopy(lm.model.config)
        attention._attn_implementation = "eager"
        for layer in self.layers:
            layer.self_attn.config = attention
        dim = lm.hidden_size
        self.norm = nn.RMSNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, cfg.width), nn.GELU(), nn.Linear(cfg.width, dim))
        self.out = Calibrate(dim, lm.embedding_rms)
        self.float().requires_grad_(True)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor,
                autocast: contextlib.AbstractContextManager | None = None, m: int | None = None) -> torch.Tensor:
        """M slots [B, M, D] (fp32) from source token ids [B, S] and their mask; ``autocast`` is the LM's;
        ``m`` pools into another number of chunks than ``compressor.m`` (e.g. pretraining at a higher ratio)."""
        with autocast or contextlib.nullcontext():
            states = self.encode(ids, mask)
        x = self.norm(torch.bmm(pool_matrix(mask, m or self.cfg.m), states.float()))
        return self.out(x + self.mlp(x))

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last copied layer's states [B, S, D] (the residual stream, before any final norm)."""
        x = self.embed_tokens(ids)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row's real tokens count from 0, whatever the padding
        rope = self.rotary_emb(x, positions)
        bias = attention_bias(mask, self.cfg.bidirectional)
        for layer in self.layers:
            x = layer(x, attention_mask=bias, position_embeddings=rope, position_ids=positions)
        return x


def attention_bias(mask: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """Additive mask [B, 1, S, S]: 0 where a query may attend a key, the float minimum elsewhere.

    Padding keys are never attended; without ``bidirectional`` no key after the query either. Every query
    keeps at least one key (source rows are never empty), so no softmax row is all masked.
    """
    allowed = (mask[:, None, None, :] > 0).expand(-1, 1, mask.shape[1], -1)
    if not bidirectional:
        allowed = allowed & torch.ones(mask.shape[1], mask.shape[1], dtype=torch.bool, device=mask.device).tril()
    zero = torch.zeros((), dtype=torch.float32, device=mask.device)
    return torch.where(allowed, zero, torch.finfo(torch.float32).min)
