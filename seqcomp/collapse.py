"""Collapse and scale diagnostics of compressed sequences.

The diagnosed run reported "queries collapsed to cosine 0.999"; that figure was the cosine between
*different inputs'* outputs (the output ignored its input). Both figures are reported here, separately:
``cross_input_cosine`` (different inputs, same slot layout: ~1 means the compressor ignores its input)
and ``within_sequence_cosine`` (slots of one input: ~1 means the slots duplicate each other).
"""

from __future__ import annotations

import torch


def _mean_offdiag(sim: torch.Tensor) -> float:
    n = sim.shape[-1]
    if n < 2:
        return float("nan")
    off = sim.sum((-1, -2)) - sim.diagonal(dim1=-2, dim2=-1).sum(-1)
    return float((off / (n * (n - 1))).mean())


def cross_input_cosine(slots: torch.Tensor) -> float:
    """Mean cosine between different inputs' whole compressed sequences (flattened) [N, M, D]."""
    flat = torch.nn.functional.normalize(slots.float().reshape(slots.shape[0], -1), dim=-1)
    return _mean_offdiag(flat @ flat.T)


def within_sequence_cosine(slots: torch.Tensor) -> float:
    """Mean cosine between different slots of the same input, averaged over inputs."""
    unit = torch.nn.functional.normalize(slots.float(), dim=-1)
    return _mean_offdiag(unit @ unit.transpose(1, 2))


def effective_rank(slots: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of all slots stacked [N*M, D], centred."""
    x = slots.float().reshape(-1, slots.shape[-1])
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    p = s / s.sum().clamp(min=1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()))


def rms(x: torch.Tensor) -> float:
    return float(x.float().pow(2).mean().sqrt())


def collapse_report(slots: torch.Tensor, embedding_rms: float) -> dict[str, float]:
    return {
        "cross_input_cosine": cross_input_cosine(slots),
        "within_sequence_cosine": within_sequence_cosine(slots),
        "effective_rank": effective_rank(slots),
        "compressed_rms": rms(slots),
        "embedding_rms": embedding_rms,
        "rms_ratio": rms(slots) / embedding_rms,
    }
