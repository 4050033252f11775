"""The pretraining stage: the compressor learns from unlabeled passages before QA fine-tuning (Tier 3.9).

Each passage becomes one row of one of two tasks, drawn with ``pretrain.reconstruction_ratio``:

- reconstruction: the compressor reads the passage; after ``[slots][task vector][BOS?]`` the frozen LM must
  regenerate the passage's first ``target_tokens`` tokens;
- continuation: the compressor reads the passage up to a cut; after ``[slots][task vector][BOS?]`` the frozen
  LM must continue with the next ``target_tokens`` tokens.

Each task has one learned vector (``CompressionSystem.task_vectors``, started at the mean embedding of
``pretrain.marker`` / ``pretrain.continuation_marker``), as in ARC-Encoder. Rows are built by the same
``build_prefix``/``build_lm_input`` as QA training (the target takes the place of the answer) and the loss is
the same teacher-forced CE. The stage runs in the one training loop (``seqcomp.stages.run_stage``): the same
resume, non-finite guard, history (``pretrain_history.jsonl``) and progress bar as fine-tuning, which then
starts from these weights. ``pretrain.m`` pretrains a pool/encoder compressor at another number of slots.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from .batches import LengthBucketSampler
from .config import ExperimentConfig, PretrainConfig
from .layout import Segment, build_lm_input, build_prefix, text_ids
from .lm import LM
from .losses import AnswerLogits, answer_ce, answer_logits
from .slices import Slices, passage_pool
from .stages import PRETRAIN, Stage, system_module

RECONSTRUCT, CONTINUE = "reconstruction", "continuation"


@dataclasses.dataclass(frozen=True)
class PretrainRow:
    task: str
    text: str  # what the compressor reads
    target: tuple[int, ...]


def task_vectors(lm: LM, cfg: PretrainConfig) -> nn.ParameterDict:
    """One trainable vector [1, D] per task, started at the mean token embedding of its marker text."""
    def start(text: str) -> nn.Parameter:
        ids = torch.tensor(text_ids(lm.tokenizer, text), device=lm.device)
        return nn.Parameter(lm.embed(ids).detach().float().mean(0, keepdim=True).clone())
    return nn.ParameterDict({RECONSTRUCT: start(cfg.marker), CONTINUE: start(cfg.continuation_marker)})


def pretrain_passages(config: ExperimentConfig, slices: Slices) -> list[str]:
    """The distinct passages the stage reads: the training slice's, or the whole training split's."""
    if config.pretrain.passages_from == "train-split":
        return list(passage_pool(config.data, config.pretrain.passages))
    return list(dict.fromkeys(e.context for e in slices.train))[: config.pretrain.passages]


def pretrain_rows(lm: LM, passages: Sequence[str], config: ExperimentConfig,
                  generator: torch.Generator) -> list[PretrainRow]:
    """One row per passage of 2 or more tokens, its task drawn from ``generator``."""
    cfg = config.pretrain
    rows = []
    for passage in passages:
        ids = text_ids(lm.tokenizer, passage)[: config.data.max_source_tokens]
        if len(ids) < 2:
            continue
        if float(torch.rand((), generator=generator)) < cfg.reconstruction_ratio:
            rows.append(PretrainRow(RECONSTRUCT, passage, tuple(ids[: cfg.target_tokens])))
        else:
            cut = max(1, len(ids) - cfg.target_tokens, len(ids) // 2)
            rows.append(PretrainRow(CONTINUE, lm.tokenizer.decode(list(ids[:cut])), tuple(ids[cut: cut + cfg.target_tokens])))
    return rows


def pretrain_prefixes(lm: LM, system, rows: Sequence[PretrainRow], config: ExperimentConfig) -> list[list[Segment]]:
    """``[slots][task vector][BOS?]`` per row, by the one prefix builder (no question, no anchor)."""
    _, slots = system(lm, texts=[r.text for r in rows], m=config.pretrain.m or None)
    vectors = system_module(system).task_vectors
    layout = dataclasses.replace(config.layout, question_as_text=False, anchor="")
    return [build_prefix(lm.tokenizer, layout, [Segment("compressed", vectors=slots[i]),
                                                Segment("task", vectors=vectors[r.task])], "")
            for i, r in enumerate(rows)]


def pretrain_batch_loss(lm: LM, system, rows: Sequence[PretrainRow], config: ExperimentConfig) -> dict[str, torch.Tensor]:
    """CE of the targets after each row's prefix, in total and per task."""
    prefixes = pretrain_prefixes(lm, system, rows, config)
    al = answer_logits(lm, build_lm_input(lm.embed, prefixes, [list(r.target) for r in rows], pad_id=lm.pad_id))
    parts = {"total": answer_ce(al)}
    for task in (RECONSTRUCT, CONTINUE):
        idx = torch.tensor([i for i, r in enumerate(rows) if r.task == task], dtype=torch.long,
                           device=al.logits.device)
        if len(idx):
            parts[task] = answer_ce(AnswerLogits(al.logits[idx], al.targets[idx]))
    return parts


def pretrain_stage(lm: LM, system, slices: Slices, config: ExperimentConfig, accelerator, log) -> tuple[Stage, dict]:
    """The stage ``run_stage`` runs before fine-tuning, and a summary of its rows (for metrics.json)."""
    module = system_module(system)
    if module.compressor is None:
        raise ValueError("pretrain.passages > 0 needs a compressor (compressor.kind query, pool or encoder)")
    kind, m = config.compressor.kind, config.compressor.m
    if config.pretrain.m not in (0, m) and kind not in ("pool", "encoder"):
        raise ValueError(f"pretrain.m={config.pretrain.m}: compressor.kind '{kind}' has a fixed number of slots ({m}); "
                         f"only pool and encoder can pretrain at another M (set pretrain.m=0)")
    cfg, batch_size = config.pretrain, config.train.batch_size
    generator = torch.Generator().manual_seed(config.train.seed)
    rows = pretrain_rows(lm, pretrain_passages(config, slices), config, generator)
    if not rows:
        raise ValueError("pretraining found no passages of 2 or more tokens")
    params = [p for name, p in module.named_parameters() if p.requires_grad and not name.startswith("soft_anchor")]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    loader = DataLoader(list(range(len(rows))), collate_fn=list, batch_sampler=LengthBucketSampler(
        [len(r.text) for r in rows], batch_size, config.train.length_window, generator))
    optimizer, loader, scheduler = accelerator.prepare(optimizer, loader, scheduler)
    steps = math.ceil(len(rows) / batch_size)
    stage = Stage(name=PRETRAIN, loader=loader, generator=generator, params=params, optimizer=optimizer,
                  scheduler=scheduler, epochs=cfg.epochs, steps_per_epoch=steps, log=log,
                  save_every=config.train.save_every or steps,
                  losses=lambda idx, _progress: pretrain_batch_loss(lm, system, [rows[i] for i in idx], config))
    tasks = [r.task for r in rows]
    return stage, {"pretrain_rows": len(rows), "pretrain_reconstruction": tasks.count(RECONSTRUCT),
                   "pretrain_steps": stage.total_steps}
