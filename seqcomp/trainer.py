"""Training a system: the setup doctor, an optional pretraining stage, QA fine-tuning, the test evaluation.

Both stages run in ``seqcomp.stages.run_stage`` on top of ``accelerate`` (one loop: resume, non-finite guard,
history, progress). Fine-tuning: fp32 master weights (AdamW), the frozen LM in bf16, gradient clipping, warmup +
cosine schedule, periodic evaluation on a selection slice disjoint from the test slice, best/last checkpoints as
safetensors + JSON in the run folder.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from torch.utils.data import DataLoader
from transformers import get_cosine_schedule_with_warmup

from .batches import LengthBucketSampler
from .checkpoint import load_weights, read_progress, save_weights
from .config import ExperimentConfig
from .data import SquadExample
from .collapse import collapse_report
from .evaluate import predict, score
from .layout import build_lm_input
from .lm import LM, load_lm
from .pretrain import pretrain_stage
from .losses import answer_logits, answers_for, loss_terms, scheduled_sampling_input, teacher_logits
from .runs import RunFolder, prepare_run_folder, run_lock
from .slices import Slices, load_slices
from .stages import FINETUNE, PRETRAIN, Stage, run_stage, system_module
from .stages import NonFiniteLoss  # noqa: F401  (re-exported: callers catch trainer.NonFiniteLoss)
from .system import CompressionSystem
from .tracking import start_tracker


class DoctorFailed(RuntimeError):
    """The setup doctor found a mismatch; the message lists the failed checks."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_losses(lm: LM, system: CompressionSystem, examples: Sequence[SquadExample],
                config: ExperimentConfig, progress: float = 1.0) -> dict[str, torch.Tensor]:
    """All loss terms of one batch from one student forward (plus no-grad passes for KD and scheduled
    sampling); ``progress`` in [0, 1] ramps the scheduled-sampling probability."""
    answers, _ = answers_for(lm, config, examples)
    prefixes, slots = system(lm, examples)
    batch = build_lm_input(lm.embed, prefixes, answers, pad_id=lm.pad_id)
    if config.loss.scheduled_sampling > 0:
        batch = scheduled_sampling_input(lm, batch, prefixes, answers, config.loss.scheduled_sampling * progress)
    teacher, dense = None, config.loss.dense_kd_weight > 0
    if config.loss.kd_weight > 0 or dense:
        teacher = teacher_logits(lm, system_module(system).teacher_prefixes(lm, examples), answers, dense)
    return loss_terms(answer_logits(lm, batch, dense), config.loss, teacher, slots)


def evaluate_system(lm: LM, system: CompressionSystem, examples: Sequence[SquadExample], config: ExperimentConfig,
                    desc: str, progress: bool = True):
    system = system_module(system)
    was_training = system.training
    system.eval()
    gens = predict(lm, examples, lambda exs: system.prefixes(lm, exs), config.generation, config.layout,
                   desc=desc, progress=progress)
    system.train(was_training)
    return score(lm, examples, gens, config.layout)


@torch.no_grad()
def compressed_diagnostics(lm: LM, system: CompressionSystem, examples: Sequence[SquadExample]) -> dict | None:
    system = system_module(system)
    if system.compressor is None:
        return None
    return collapse_report(system.compress(lm, examples), lm.embedding_rms)


def train(config: ExperimentConfig, out: Path, lm: LM | None = None, slices: Slices | None = None,
          allow_failed_checks: bool = False, progress: bool = True, resume: bool = False,
          overwrite: bool = False) -> dict:
    """Train ``config`` into run folder ``out``; returns the test metrics of the best checkpoint.

    Under ``accelerate launch --num_processes N`` each global batch of ``train.batch_size`` questions is
    split across the processes (``split_batches``) and the per-question loss means average back to the
    single-process loss, so N processes follow the same trajectory as one. Only the main process writes,
    and it holds the run folder's lock. ``resume=True`` continues from ``checkpoints/state.safetensors``
    exactly where the uninterrupted run would be (same optimizer, schedule, RNG and data order).
    """
    out = Path(out)
    # a pretraining stage leaves the soft anchor unused, fine-tuning the task vectors: DDP must allow that
    ddp = DistributedDataParallelKwargs(find_unused_parameters=bool(config.pretrain.passages))
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp],
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    if config.train.batch_size % accelerator.num_processes:
        raise ValueError(f"train.batch_size={config.train.batch_size} must be divisible by the "
                         f"{accelerator.num_processes} processes")
    with run_lock(out, enabled=accelerator.is_main_process):
        if accelerator.is_main_process:
            prepare_run_folder(out, resume=resume, overwrite=overwrite)
        accelerator.wait_for_everyone()
        return _train(config, out, accelerator, lm, slices, allow_failed_checks, progress, resume)


def _train(config: ExperimentConfig, out: Path, accelerator: Accelerator, lm: LM | None, slices: Slices | None,
           allow_failed_checks: bool, progress: bool, resume: bool) -> dict:
    from .doctor import format_checks, run_doctor

    main = accelerator.is_main_process
    folder = RunFolder(out)
    seed_everything(config.train.seed)
    lm = lm or load_lm(config.model.name, config.model.precision, device=str(accelerator.device))
    slices = slices or load_slices(config.data)
    checks = run_doctor(config, lm, slices)
    failed = [c for c in checks if not c.passed]
    if main:
        folder.write_doctor([c.to_dict() for c in checks])
    if failed and not allow_failed_checks:
        raise DoctorFailed("setup doctor failed; fix the config or pass --allow-failed-checks to train the "
                           "broken setup on purpose:\n" + format_checks(failed))
    run_config = {"name": config.name, "kind": "trained", "data_source": slices.source,
                  "processes": accelerator.num_processes, "allow_failed_checks": allow_failed_checks,
                  "experiment": config.to_dict()}
    if main and not resume:
        folder.write_config(run_config)

    seed_everything(config.train.seed)
    system = CompressionSystem(config, lm).to(accelerator.device)
    params = system.trainable_parameters()
    if not params:
        raise ValueError(f"config '{config.name}' has nothing to train (no compressor and no trainable anchor)")
    system = accelerator.prepare(system)
    # on --resume, the stage the saved state belongs to: pretraining resumes there, fine-tuning skips it
    saved = read_progress(folder.state_path).get("stage", FINETUNE) if resume else None
    log = folder.history_log("train", enabled=main, tracker=start_tracker(config, out, enabled=main))
    try:  # the tracker is finished however training ends (a non-finite loss, an interrupt)
        pretrained = {}
        if config.pretrain.passages:
            stage, pretrained = pretrain_stage(lm, system, slices, config, accelerator,
                                               folder.history_log("pretrain", enabled=main))
            if saved != FINETUNE:
                done = run_stage(stage, system, accelerator, config, folder, saved == PRETRAIN, progress)
                if main:
                    save_weights(system_module(system), folder.checkpoints, "pretrained", {**pretrained, **done})
            resume = saved == FINETUNE
        stage = finetune_stage(lm, system, slices, config, accelerator, params, log)
        state = run_stage(stage, system, accelerator, config, folder, resume, progress)
    finally:
        log.close()
    train_seconds = state["seconds"]
    accelerator.wait_for_everyone()
    final = system_module(system)
    load_weights(final, folder.weights_path("best"))
    records, summary = evaluate_system(lm, final, slices.test, config, "test", progress and main)
    metrics = {"system": f"trained:{config.name}", **summary.to_dict(), "best_step": state["best_step"],
               "best_select_f1": state["best_select_f1"], "train_seconds": round(train_seconds, 1),
               "skipped_batches": state["skipped"], "n_train": len(slices.train), "n_select": len(slices.select),
               **pretrained}
    if main:
        _write_compressed(lm, final, slices.test[: config.train.diagnostics_n], folder)
        folder.write_eval(run_config, records, metrics)
    accelerator.wait_for_everyone()
    return metrics


def finetune_stage(lm: LM, system, slices: Slices, config: ExperimentConfig, accelerator: Accelerator,
                   params: list, log) -> Stage:
    """QA fine-tuning: the answer losses of ``step_losses`` on the training questions, AdamW with warmup and a
    cosine schedule, evaluated on the selection slice every epoch (``train.eval_every``)."""
    optimizer = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=config.train.weight_decay)
    generator = torch.Generator().manual_seed(config.train.seed)
    lengths = [len(e.context) + len(e.question) + len(e.answers[0]) for e in slices.train]
    loader = DataLoader(list(range(len(slices.train))), collate_fn=list, batch_sampler=LengthBucketSampler(
        lengths, config.train.batch_size, config.train.length_window, generator))
    steps = math.ceil(len(slices.train) / config.train.batch_size)
    total_steps = config.train.epochs * steps
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.train.warmup_frac * total_steps), total_steps)
    optimizer, loader, scheduler = accelerator.prepare(optimizer, loader, scheduler)
    eval_every = config.train.eval_every or steps
    return Stage(name=FINETUNE, loader=loader, generator=generator, params=params, optimizer=optimizer,
                 scheduler=scheduler, epochs=config.train.epochs, steps_per_epoch=steps, log=log,
                 save_every=config.train.save_every or eval_every, eval_every=eval_every,
                 evaluate=lambda: _eval_point(lm, system, slices, config),
                 losses=lambda idx, progress: step_losses(lm, system, [slices.train[i] for i in idx], config,
                                                          progress=progress))


def _write_compressed(lm: LM, system: CompressionSystem, examples: Sequence[SquadExample], folder: RunFolder) -> None:
    """The final collapse diagnostics and the compressed vectors of a few test questions (for the explorer)."""
    diag = compressed_diagnostics(lm, system, examples)
    folder.write_diagnostics(diag or {})
    if system.compressor is None:
        return
    with torch.no_grad():
        slots = system.compress(lm, examples)
    folder.write_compressed(slots, lm.embedding_rms, [e.id for e in examples])


def _eval_point(lm, system, slices: Slices, config: ExperimentConfig) -> dict:
    _, summary = evaluate_system(lm, system, slices.select, config, "select", progress=False)
    point = {"select_em": summary.exact_match, "select_f1": summary.f1,
             "select_first_token_accuracy": summary.first_token_accuracy}
    diag = compressed_diagnostics(lm, system, slices.select[: config.train.diagnostics_n])
    if diag:
        point.update({f"diag_{k}": v for k, v in diag.items()})
    return point


def evaluate_run(run_dir: Path, n: int | str | None = None, out: Path | None = None, progress: bool = True,
                 batch_size: int | None = None) -> dict:
    """Re-evaluate a trained run's best checkpoint on its test slice (or the first n of a larger slice; ``"all"``:
    every dev question outside the selection articles, with a progress bar and ETA); ``batch_size`` replaces the
    run's ``generation.batch_size``."""
    import dataclasses

    from .slices import full_test_size

    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    config = run.experiment_config()
    if n == "all":
        n = full_test_size(config.data)
    if n is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, n_test=n))
    if batch_size is not None:
        config = dataclasses.replace(config, generation=dataclasses.replace(config.generation, batch_size=batch_size))
    lm = load_lm(config.model.name, config.model.precision)
    system = CompressionSystem(config, lm)
    load_weights(system, run.weights_path("best"))
    slices = load_slices(dataclasses.replace(config.data, n_train=1))
    records, summary = evaluate_system(lm, system, slices.test, config, "eval", progress)
    metrics = {"system": f"trained:{config.name}", **summary.to_dict()}
    RunFolder(out or run_dir / f"eval-n{len(slices.test)}").write_eval(
        {"name": config.name, "kind": "eval", "run": str(run_dir), "experiment": config.to_dict()}, records, metrics)
    return metrics
