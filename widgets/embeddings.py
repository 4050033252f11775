"""Pure figures over compressed vectors (``compressed.safetensors``): the collapse and scale picture.

Shapes follow the run folder: ``slots`` is [N, M, D] (N test questions, M slots, D the LM's hidden size).
PCA is a centred SVD in torch so no extra dependency is needed. The collapse numbers in the titles (mean
cross-input and within-sequence cosine, RMS ratio) are ``seqcomp.collapse``' own, the ones training records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import plotly.graph_objects as go
import torch

from seqcomp.collapse import cross_input_cosine, rms, within_sequence_cosine
from seqcomp.runs import RunFolder

COSINE_SCALE = "RdBu_r"


def load_compressed(run_dir: str | Path) -> tuple[torch.Tensor, list[str], float]:
    """(slots [N, M, D], the N question ids in order, token-embedding RMS) of a trained run folder."""
    return RunFolder(run_dir).read_compressed()


def _check_slots(slots: torch.Tensor) -> torch.Tensor:
    if slots.dim() != 3:
        raise ValueError(f"slots must be [N, M, D], got shape {tuple(slots.shape)}")
    return slots.detach().float().cpu()


def pca_2d(x: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """Project rows of x [n, D] on the top-2 principal components; also the explained-variance fractions."""
    x = x.detach().float().cpu()
    centred = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    k = min(2, vh.shape[0])
    coords = centred @ vh[:k].T
    if k < 2:  # a single point has one (zero) component; pad so callers always get two columns
        coords = torch.cat([coords, torch.zeros(coords.shape[0], 2 - k)], dim=1)
    var = s.pow(2)
    total = float(var.sum()) or 1.0
    return coords, [float(v) / total for v in var[:2]] + [0.0] * (2 - min(2, len(var)))


def embedding_2d_figure(slots: torch.Tensor, labels: Sequence[Any], method: str = "pca", level: str = "sequence",
                        hover: Sequence[str] | None = None, colour_name: str = "label") -> go.Figure:
    """2-D PCA map of compressed sequences, one trace (colour) per distinct label.

    ``level="sequence"`` mean-pools each input's M slots into one point (N points: do different inputs land
    in different places?); ``level="slot"`` plots every slot (N*M points: do slots spread or pile up?).
    ``labels`` and ``hover`` are per sequence (length N) in both cases.
    """
    if method != "pca":
        raise ValueError(f"method '{method}' is not supported; use 'pca'")
    if level not in ("sequence", "slot"):
        raise ValueError(f"level must be 'sequence' or 'slot', got '{level}'")
    slots = _check_slots(slots)
    n, m, d = slots.shape
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} compressed sequences")
    hover = list(hover) if hover is not None else [f"sequence {i}" for i in range(n)]
    if level == "sequence":
        points, seq, slot = slots.mean(1), list(range(n)), [None] * n
    else:
        points, seq, slot = slots.reshape(n * m, d), [i for i in range(n) for _ in range(m)], list(range(m)) * n
    coords, frac = pca_2d(points)
    fig = go.Figure()
    for value in sorted({str(v) for v in labels}):
        idx = [j for j, i in enumerate(seq) if str(labels[i]) == value]
        text = [hover[seq[j]] + ("" if slot[j] is None else f"<br>slot {slot[j]}") for j in idx]
        fig.add_trace(go.Scatter(x=coords[idx, 0].tolist(), y=coords[idx, 1].tolist(), mode="markers", name=value,
                                 text=text, hovertemplate="%{text}<extra>" + value + "</extra>",
                                 marker={"size": 9 if level == "sequence" else 6, "opacity": 0.8}))
    what = "mean-pooled sequences (one point per input)" if level == "sequence" else "individual slots (M per input)"
    fig.update_layout(title=f"PCA of compressed vectors<br><sup>{what}; colour: {colour_name}</sup>",
                      xaxis_title=f"PC1 ({100 * frac[0]:.0f}% var.)", yaxis_title=f"PC2 ({100 * frac[1]:.0f}% var.)",
                      legend_title=colour_name, height=480)
    return fig


def _decode(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id])


@torch.no_grad()
def nearest_tokens(slots: torch.Tensor, embedding_table: torch.Tensor, tokenizer: Any, k: int = 5
                   ) -> list[list[list[tuple[str, float]]]]:
    """Per sequence, per slot, the k vocabulary tokens whose input embeddings are closest by cosine.

    Compressed vectors need not resemble any token; low cosines here are normal, but every slot
    pointing at the same few tokens is a collapse symptom.
    """
    slots = _check_slots(slots)
    table = torch.nn.functional.normalize(embedding_table.detach().float().cpu(), dim=-1)
    if table.shape[1] != slots.shape[2]:
        raise ValueError(f"slots have D={slots.shape[2]} but the embedding table has D={table.shape[1]}")
    sims = torch.nn.functional.normalize(slots, dim=-1) @ table.T  # [N, M, V]
    vals, ids = sims.topk(min(k, table.shape[0]), dim=-1)
    cache: dict[int, str] = {}
    out = []
    for seq_vals, seq_ids in zip(vals.tolist(), ids.tolist()):
        out.append([[(cache.setdefault(t, _decode(tokenizer, t)), v) for t, v in zip(slot_ids, slot_vals)]
                    for slot_vals, slot_ids in zip(seq_vals, seq_ids)])
    return out


def _cosine_heatmap(unit: torch.Tensor, labels: list[str], title: str, axis: str, mean_off_diagonal: float
                    ) -> go.Figure:
    sim = (unit @ unit.T).clamp(-1, 1)
    fig = go.Figure(go.Heatmap(z=sim.tolist(), x=labels, y=labels, zmin=-1, zmax=1, colorscale=COSINE_SCALE,
                               colorbar={"title": "cosine"},
                               hovertemplate=axis + " %{y} vs %{x}: %{z:.3f}<extra></extra>"))
    mean = f"mean off-diagonal {mean_off_diagonal:.3f}" if sim.shape[0] > 1 else "one item"
    fig.update_layout(title=f"{title}<br><sup>{mean}</sup>", xaxis_title=axis, yaxis_title=axis,
                      yaxis_autorange="reversed", height=450, width=520)
    return fig


def slot_cosine_heatmap(slots: torch.Tensor, index: int) -> go.Figure:
    """M x M cosine between the slots of ONE input: a bright block means slots duplicate each other."""
    slots = _check_slots(slots)
    if not 0 <= index < slots.shape[0]:
        raise IndexError(f"sequence index {index} out of range for {slots.shape[0]} sequences")
    unit = torch.nn.functional.normalize(slots[index], dim=-1)
    return _cosine_heatmap(unit, [str(j) for j in range(slots.shape[1])],
                           f"Slot-vs-slot cosine within sequence {index}", "slot",
                           within_sequence_cosine(slots[index: index + 1]))


def cross_input_cosine_heatmap(slots: torch.Tensor, labels: Sequence[str] | None = None) -> go.Figure:
    """N x N cosine between different inputs' flattened sequences: all ~1 means the input is ignored."""
    slots = _check_slots(slots)
    unit = torch.nn.functional.normalize(slots.reshape(slots.shape[0], -1), dim=-1)
    names = list(labels) if labels is not None else [str(i) for i in range(slots.shape[0])]
    return _cosine_heatmap(unit, names, "Cross-input cosine of whole compressed sequences", "input",
                           cross_input_cosine(slots))


def _vector_rms(x: torch.Tensor) -> torch.Tensor:
    return x.detach().float().cpu().reshape(-1, x.shape[-1]).pow(2).mean(-1).sqrt()


def rms_histogram(slots: torch.Tensor, embedding_table: torch.Tensor, bins: int = 60) -> go.Figure:
    """Per-vector RMS of compressed slots vs the LM's token embeddings, overlaid (fraction of vectors).

    The LM only ever saw vectors on the token-embedding scale; compressed slots far outside that range
    are out of distribution regardless of direction.
    """
    slots = _check_slots(slots)
    comp, emb = _vector_rms(slots), _vector_rms(embedding_table)
    fig = go.Figure()
    for values, name in ((emb, f"token embeddings ({emb.numel()})"), (comp, f"compressed slots ({comp.numel()})")):
        fig.add_trace(go.Histogram(x=values.tolist(), name=name, histnorm="probability", opacity=0.6,
                                   nbinsx=bins))
    ratio = rms(slots) / rms(embedding_table.detach())
    fig.update_layout(barmode="overlay", title=f"Per-vector RMS: compressed vs token embeddings<br>"
                      f"<sup>overall RMS ratio {ratio:.2f}</sup>", xaxis_title="RMS of one vector",
                      yaxis_title="fraction of vectors", height=450,
                      legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0})
    return fig
