"""Training losses on the one layout: answer CE, first-token CE, K-token CE and KD from the full-text teacher.

All terms come from ONE forward pass of the student: the logits at the positions that predict answer
tokens (``LMInput.answer_logit_positions``). Targets are read from the unshifted labels one column to the
right of each such position, which is exactly the shift Hugging Face applies inside its own LM loss; a
test and the setup doctor check that ``answer_ce`` on a text prefix equals the model's own loss (bug B1).
Dense KD reads the same forward's logits at every token after the head (BOS, question, anchor, answer):
rows end at the last column, so those tokens sit in the same columns for the student and the teacher.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .config import ExperimentConfig, LossConfig
from .data import SquadExample
from .layout import IGNORE, LMInput, Segment, answer_ids, build_lm_input
from .lm import LM, attention


@dataclass
class AnswerLogits:
    logits: torch.Tensor  # [B, A, V] logits predicting answer token j of each row
    targets: torch.Tensor  # [B, A] answer token ids (IGNORE where the row's answer is shorter)
    tail: torch.Tensor | None = None  # [B, T, V] logits of the last T columns (dense KD only), T = max(tail_lengths)
    tail_lengths: list[int] | None = None  # tokens after each row's head: its valid right end of ``tail``

    @property
    def valid(self) -> torch.Tensor:
        return self.targets != IGNORE


def answer_logits(lm: LM, batch: LMInput, dense: bool = False) -> AnswerLogits:
    """Forward once, keeping only the logits of the last ``max answer + 1`` columns (cheap on big vocabularies),
    or with ``dense`` those of every token after the head as well (``tail``)."""
    if batch.labels is None:
        raise ValueError("answer_logits needs a batch built with answers")
    a = max(batch.answer_lengths)
    tails = post_head_lengths(batch) if dense else None
    keep = max(a + 1, *tails) if dense else a + 1
    with lm.autocast(), attention(lm, training=torch.is_grad_enabled(), width=batch.width):
        out = lm.model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids, logits_to_keep=last_positions(batch.width, keep),
                       use_cache=False)
    positions = batch.answer_logit_positions(a)  # [B, A], -1 where absent
    offset = batch.width - keep
    kept = (positions - offset).clamp(min=0).to(out.logits.device)
    logits = torch.gather(out.logits, 1, kept[:, :, None].expand(-1, -1, out.logits.shape[-1]))
    target_cols = (positions + 1).clamp(min=0, max=batch.width - 1).to(batch.labels.device)
    targets = torch.gather(batch.labels, 1, target_cols)
    targets = torch.where(positions.to(targets.device) >= 0, targets, torch.full_like(targets, IGNORE))
    tail = out.logits[:, keep - max(tails):].float() if dense else None
    return AnswerLogits(logits=logits.float(), targets=targets, tail=tail, tail_lengths=tails)


# the segments build_prefix puts after the head, then the answer build_lm_input appends: the same tokens in
# the student and in the full-text teacher (a trained anchor differs in vectors, not in length)
POST_HEAD = ("bos", "question", "anchor", "answer")


def post_head_lengths(batch: LMInput) -> list[int]:
    """Per row, how many of its last columns hold post-head tokens (its trailing POST_HEAD segments)."""
    out = []
    for segments in batch.segments:
        n = 0
        for name, length in reversed(segments):
            if name not in POST_HEAD:
                break
            n += length
        out.append(n)
    return out


def last_positions(width: int, k: int, device=None) -> torch.Tensor:
    """``logits_to_keep`` as an index tensor of the last ``k`` columns rather than the int ``k``: indexing copies
    the kept hidden states into a contiguous block, where an int slices a strided view that the CPU's ``matmul``
    with the [V, D] output head turns into a batched matmul over a materialised [B, D, V] copy of the head (about
    1 s per step for SmolLM2 at batch 8: a third of a training step)."""
    return torch.arange(width - k, width, device=device)


def answer_ce(al: AnswerLogits, first_k: int | None = None) -> torch.Tensor:
    """CE over answer tokens (all, or the first ``first_k``): token mean per question, then question mean.

    Every question weighs the same whatever its answer length, and a batch split across processes
    averages back to exactly the single-process value; for one question it is the model's own LM loss.
    """
    targets = al.targets if first_k is None else al.targets[:, :first_k]
    logits = al.logits if first_k is None else al.logits[:, :first_k]
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    valid = (targets != IGNORE).float()
    return ((per_token * valid).sum(-1) / valid.sum(-1).clamp(min=1)).mean()


def kd_loss(student: AnswerLogits, teacher_logits: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """Forward KL(teacher || student) at temperature tau on the first k answer tokens, times tau^2."""
    return _masked_kl(teacher_logits[:, :k], student.logits[:, :k], student.valid[:, :k].float(), tau)


def dense_kd_loss(student: AnswerLogits, teacher: AnswerLogits, tau: float) -> torch.Tensor:
    """Forward KL(teacher || student) at every post-head token (question, anchor and answer positions): far
    more signal per question than the first K answer tokens. Token mean per row, then row mean, times tau^2."""
    if student.tail is None or teacher.tail is None:
        raise ValueError("dense_kd_loss needs student and teacher logits computed with answer_logits(dense=True)")
    if student.tail_lengths != teacher.tail_lengths:
        raise ValueError(f"student and teacher differ after the head ({student.tail_lengths} vs "
                         f"{teacher.tail_lengths} tokens): they must share the layout's BOS, question, anchor, answer")
    width = student.tail.shape[1]
    cols = torch.arange(width, device=student.tail.device)
    lengths = torch.tensor(student.tail_lengths, device=cols.device)
    valid = (cols[None, :] >= width - lengths[:, None]).float()  # [B, T]: the row's own post-head columns
    return _masked_kl(teacher.tail, student.tail, valid, tau)


def _masked_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, valid: torch.Tensor,
               tau: float) -> torch.Tensor:
    s = student_logits / tau
    t = teacher_logits.float() / tau
    kl = (F.softmax(t, -1) * (F.log_softmax(t, -1) - F.log_softmax(s, -1))).sum(-1)
    return ((kl * valid).sum(-1) / valid.sum(-1).clamp(min=1)).mean() * tau * tau


def uniformity_loss(slots: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Cross-input anti-collapse (Wang & Isola's uniformity): log E exp(-t |z_i - z_j|^2) over pairs of
    different inputs, z = the L2-normalised mean of each input's slots. Lower is more spread out."""
    if slots.shape[0] < 2:
        raise ValueError("loss.uniformity_weight needs at least 2 questions per batch (per process)")
    z = F.normalize(slots.float().mean(1), dim=-1)
    sq = torch.cdist(z, z).pow(2)
    off = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    return torch.logsumexp(-t * sq[off], 0) - torch.log(torch.tensor(float(off.sum())))


def slot_diversity_loss(slots: torch.Tensor) -> torch.Tensor:
    """Within-sequence anti-collapse: mean squared cosine between different slots of the same input."""
    z = F.normalize(slots.float(), dim=-1)
    cos = z @ z.transpose(1, 2)
    m = slots.shape[1]
    off = ~torch.eye(m, dtype=torch.bool, device=z.device)
    return cos[:, off].pow(2).mean()


def scheduled_sampling_input(lm: LM, batch: LMInput, prefixes: Sequence[Sequence[Segment]],
                             answers: Sequence[Sequence[int]], p: float) -> LMInput:
    """Tier 3.7: each answer input token becomes the model's own greedy prediction with probability ``p``.

    The predictions come from a no-grad pass over the same layout; the inputs are rebuilt by the same
    ``build_lm_input`` call and the labels stay gold, so only what the model reads changes.
    """
    with torch.no_grad():
        predicted = answer_logits(lm, batch).logits.argmax(-1).tolist()
    use_own = (torch.rand(len(answers), max(len(a) for a in answers)) < p).tolist()
    mixed = [[predicted[i][j] if use_own[i][j] else tok for j, tok in enumerate(a)] for i, a in enumerate(answers)]
    sampled = build_lm_input(lm.embed, prefixes, mixed, pad_id=lm.pad_id)
    return dataclasses.replace(batch, inputs_embeds=sampled.inputs_embeds)


def answers_for(lm: LM, config: ExperimentConfig, examples: Sequence[SquadExample]) -> tuple[list[list[int]], int]:
    """Training answers (first gold, truncated to data.max_answer_tokens, + end-of-answer)."""
    out, n_truncated = [], 0
    for e in examples:
        ids, truncated = answer_ids(lm.tokenizer, config.layout, e.answers[0], config.data.max_answer_tokens)
        out.append(ids)
        n_truncated += truncated
    return out, n_truncated


@torch.no_grad()
def teacher_logits(lm: LM, teacher_prefixes: Sequence[Sequence[Segment]], answers: Sequence[Sequence[int]],
                   dense: bool = False) -> AnswerLogits:
    """The frozen LM reading the full text, at the same answer (and, dense, post-head) positions, aligned by the
    right edge."""
    return answer_logits(lm, build_lm_input(lm.embed, teacher_prefixes, answers, pad_id=lm.pad_id), dense)


def combine(parts: dict[str, torch.Tensor], cfg: LossConfig) -> torch.Tensor:
    weights = {"ce": cfg.ce_weight, "first_token": cfg.first_token_weight, "k_token": cfg.k_weight,
               "kd": cfg.kd_weight, "dense_kd": cfg.dense_kd_weight, "uniformity": cfg.uniformity_weight,
               "slot_diversity": cfg.slot_diversity_weight}
    return sum(weights[name] * value for name, value in parts.items() if weights.get(name, 0) > 0)


def loss_terms(al: AnswerLogits, cfg: LossConfig, teacher: AnswerLogits | None,
               slots: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each term separately (for logging); only weighted terms enter the total."""
    parts = {"ce": answer_ce(al), "first_token": answer_ce(al, 1)}
    if (cfg.uniformity_weight > 0 or cfg.slot_diversity_weight > 0) and slots is None:
        raise ValueError("loss.uniformity_weight/slot_diversity_weight act on compressed slots; "
                         "compressor.kind must be query or pool")
    if cfg.uniformity_weight > 0:
        parts["uniformity"] = uniformity_loss(slots)
    if cfg.slot_diversity_weight > 0:
        parts["slot_diversity"] = slot_diversity_loss(slots)
    if cfg.k_weight > 0:
        parts["k_token"] = answer_ce(al, cfg.k_tokens)
    if (cfg.kd_weight > 0 or cfg.dense_kd_weight > 0) and teacher is None:
        raise ValueError("loss.kd_weight/dense_kd_weight > 0 needs teacher logits")
    if cfg.kd_weight > 0:
        parts["kd"] = kd_loss(al, teacher.logits, cfg.k_tokens, cfg.kd_tau)
    if cfg.dense_kd_weight > 0:
        parts["dense_kd"] = dense_kd_loss(al, teacher, cfg.kd_tau)
    parts["total"] = combine(parts, cfg)
    return parts
