"""Compressor pretraining on unlabeled passages (Tier 3.9): reconstruction mixed with continuation.

Each passage becomes one row of one of two tasks, drawn with ``pretrain.reconstruction_ratio``:

- reconstruction: the compressor reads the passage; after ``[slots][BOS?][marker]`` the frozen LM must
  regenerate the passage's first ``target_tokens`` tokens;
- continuation: the compressor reads the passage up to a cut; after ``[slots][BOS?]`` the frozen LM must
  continue with the next ``target_tokens`` tokens.

Rows are built by the same ``build_prefix``/``build_lm_input`` as QA training (the target takes the place
of the answer), and the loss is the same teacher-forced CE. QA fine-tuning then starts from these weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .config import ExperimentConfig
from .data import SquadExample
from .layout import Segment, build_lm_input, build_prefix, text_ids
from .lm import LM
from .losses import AnswerLogits, answer_ce, answer_logits

RECONSTRUCT, CONTINUE = "reconstruction", "continuation"


@dataclasses.dataclass(frozen=True)
class PretrainRow:
    task: str
    source: SquadExample  # what the compressor reads (only ``context`` matters)
    target: tuple[int, ...]


def pretrain_rows(lm: LM, examples: Sequence[SquadExample], config: ExperimentConfig,
                  generator: torch.Generator) -> list[PretrainRow]:
    """One row per distinct context (up to ``pretrain.passages``), its task drawn from ``generator``."""
    cfg = config.pretrain
    contexts = list(dict.fromkeys(e.context for e in examples))[: cfg.passages]
    rows = []
    for i, context in enumerate(contexts):
        ids = text_ids(lm.tokenizer, context)[: config.data.max_source_tokens]
        if len(ids) < 2:
            continue
        if float(torch.rand((), generator=generator)) < cfg.reconstruction_ratio:
            rows.append(PretrainRow(RECONSTRUCT, _passage(i, context), tuple(ids[: cfg.target_tokens])))
        else:
            cut = max(1, len(ids) - cfg.target_tokens, len(ids) // 2)
            read = lm.tokenizer.decode(list(ids[:cut]))
            rows.append(PretrainRow(CONTINUE, _passage(i, read), tuple(ids[cut: cut + cfg.target_tokens])))
    return rows


def _passage(i: int, text: str) -> SquadExample:
    return SquadExample(id=f"passage-{i}", title="", context=text, question="", answers=("",), answer_starts=(0,))


def pretrain_batch_loss(lm: LM, system, rows: Sequence[PretrainRow], config: ExperimentConfig) -> dict[str, torch.Tensor]:
    """CE of the targets after ``[slots][BOS?][marker]`` (reconstruction) or ``[slots][BOS?]`` (continuation)."""
    slots = system.compress(lm, [r.source for r in rows])
    layouts = {RECONSTRUCT: dataclasses.replace(config.layout, question_as_text=False, anchor=config.pretrain.marker),
               CONTINUE: dataclasses.replace(config.layout, question_as_text=False, anchor="")}
    prefixes = [build_prefix(lm.tokenizer, layouts[r.task], [Segment("compressed", vectors=slots[i])], "")
                for i, r in enumerate(rows)]
    al = answer_logits(lm, build_lm_input(lm.embed, prefixes, [list(r.target) for r in rows], pad_id=lm.pad_id))
    parts = {"total": answer_ce(al)}
    for task in (RECONSTRUCT, CONTINUE):
        idx = torch.tensor([i for i, r in enumerate(rows) if r.task == task], dtype=torch.long,
                           device=al.logits.device)
        if len(idx):
            parts[task] = answer_ce(AnswerLogits(al.logits[idx], al.targets[idx]))
    return parts


def pretrain(lm: LM, system, examples: Sequence[SquadExample], config: ExperimentConfig, log,
             progress: bool = True) -> dict:
    """Train ``system.compressor`` on the passages of ``examples``; rows go to ``log`` (kind "pretrain")."""
    if system.compressor is None:
        raise ValueError("pretrain.passages > 0 needs a compressor (compressor.kind query or pool)")
    cfg, batch_size = config.pretrain, config.train.batch_size
    generator = torch.Generator().manual_seed(config.train.seed)
    rows = pretrain_rows(lm, examples, config, generator)
    if not rows:
        raise ValueError("pretraining found no passages of 2 or more tokens in the training slice")
    params = [p for p in system.compressor.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    total = cfg.epochs * math.ceil(len(rows) / batch_size)
    step, last = 0, {}
    with tqdm(total=total, desc="pretrain", unit="step", disable=not progress) as bar:
        for _ in range(cfg.epochs):
            order = torch.randperm(len(rows), generator=generator).tolist()
            for start in range(0, len(rows), batch_size):
                parts = pretrain_batch_loss(lm, system, [rows[i] for i in order[start: start + batch_size]], config)
                if not torch.isfinite(parts["total"]):
                    raise FloatingPointError(f"non-finite pretraining loss at step {step + 1}; lower pretrain.lr")
                optimizer.zero_grad(set_to_none=True)
                parts["total"].backward()
                torch.nn.utils.clip_grad_norm_(params, config.train.grad_clip)
                optimizer.step()
                step += 1
                last = {f"loss_{k}": float(v.detach()) for k, v in parts.items()}
                log.write({"step": step, "kind": "pretrain", **last})
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss_total']:.3f}")
    tasks = [r.task for r in rows]
    return {"pretrain_rows": len(rows), "pretrain_reconstruction": tasks.count(RECONSTRUCT),
            "pretrain_steps": step, **{f"pretrain_final_{k}": v for k, v in last.items()}}
