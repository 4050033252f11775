"""Trainable compressors: source vectors [B, S, D] -> M slots [B, M, D] at the LM's embedding scale.

``query``: M learned queries cross-attend over the source (the diagnosed design), ``pool``: average
neighbouring source vectors into M slots, then a residual MLP (the design the literature finds stronger).
With ``calibrate`` (fix B3) the output is RMS-normalised and multiplied by a learnable per-dimension gain
initialised to the embedding table's RMS, and position information is added at the embedding scale.
Without it (the diagnosed setup) the output passes a LayerNorm (RMS ~1, ~7-95x too large) and position
encodings have amplitude 1. Parameters are fp32; only the frozen LM runs under autocast.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import CompressorConfig


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """Classic sinusoidal encodings of RMS ~0.71 (amplitude 1), shape [length, dim]."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    enc = torch.zeros(length, dim, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return enc


def pool_matrix(mask: torch.Tensor, m: int) -> torch.Tensor:
    """[B, M, S] averaging weights: slot i averages the i-th of M contiguous chunks of a row's real tokens.

    Chunks are taken in rank space (the position among a row's real tokens), so left or right padding
    gives the same slots; a row shorter than M gives each slot one token (some shared), never none.
    """
    lengths = mask.sum(-1).clamp(min=1)[:, None, None]  # [B, 1, 1]
    slots = torch.arange(m, device=mask.device)[None, :, None]  # [1, M, 1]
    start = torch.div(slots * lengths, m, rounding_mode="floor")
    end = torch.maximum(torch.div((slots + 1) * lengths, m, rounding_mode="floor"), start + 1)
    rank = (mask.cumsum(-1) - 1)[:, None, :]  # [B, 1, S]
    weights = ((rank >= start) & (rank < end) & (mask[:, None, :] > 0)).float()
    return weights / weights.sum(-1, keepdim=True).clamp(min=1.0)


class Calibrate(nn.Module):
    """RMS-normalise and scale by a learnable per-dimension gain set to the embedding RMS (fix B3)."""

    def __init__(self, dim: int, target_rms: float):
        super().__init__()
        self.gain = nn.Parameter(torch.full((dim,), float(target_rms)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-12)


class Compressor(nn.Module):
    def __init__(self, cfg: CompressorConfig, dim: int, embedding_rms: float):
        super().__init__()
        if cfg.kind not in ("query", "pool"):
            raise ValueError(f"compressor kind '{cfg.kind}' has no trainable compressor")
        self.cfg = cfg
        self.position_scale = embedding_rms if cfg.position_scale == "embedding" else 1.0
        if cfg.kind == "pool":
            self.slot_pos = nn.Parameter(torch.randn(cfg.m, dim) * self.position_scale)
        else:
            self.queries = nn.Parameter(torch.randn(cfg.m, dim) * embedding_rms)
            self.norm_q = nn.LayerNorm(dim)
            self.norm_kv = nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, cfg.heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, cfg.width), nn.GELU(), nn.Linear(cfg.width, dim))
        self.out = Calibrate(dim, embedding_rms) if cfg.calibrate else nn.LayerNorm(dim)

    def forward(self, source: torch.Tensor, mask: torch.Tensor, m: int | None = None) -> torch.Tensor:
        """M slots [B, M, D] from source vectors [B, S, D]; ``m`` (pool only) pools into another number of
        chunks than ``compressor.m``, e.g. a pretraining stage at a higher compression ratio."""
        source = source.float()
        if m is not None and m != self.cfg.m and self.cfg.kind != "pool":
            raise ValueError(f"compressor kind '{self.cfg.kind}' has {self.cfg.m} learned queries; only 'pool' "
                             f"and 'encoder' can compress into another number of slots ({m})")
        if self.cfg.kind == "query":
            pos = sinusoidal_positions(source.shape[1], source.shape[2], source.device) * self.position_scale
            kv = self.norm_kv(source + pos)
            q = self.queries.unsqueeze(0).expand(source.shape[0], -1, -1)
            attended, _ = self.attn(self.norm_q(q), kv, kv, key_padding_mask=mask == 0, need_weights=False)
            x = q + attended
        else:
            m = m or self.cfg.m
            x = torch.bmm(pool_matrix(mask, m), source)
            x = x + self.slot_pos[torch.arange(m, device=x.device) * self.cfg.m // m]
        x = x + self.mlp(self.norm_mlp(x))
        return self.out(x)
