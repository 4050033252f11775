"""Training loop for compressors, written out nanoGPT-style on top of ``accelerate``.

fp32 master weights (AdamW), bf16 autocast only around the frozen LM, gradient clipping, warmup +
cosine schedule, periodic evaluation on a selection slice disjoint from the test slice, best/last
checkpoints as safetensors + JSON, ``history.jsonl`` and tqdm progress. The setup doctor runs first.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from .batches import LengthBucketSampler
from .checkpoint import STATE_FILE, load_state, load_weights, save_state, save_weights
from .config import ExperimentConfig, from_dict
from .data import SquadExample
from .diagnostics import collapse_report
from .evaluate import predict, score
from .layout import build_lm_input
from .lm import LM, load_lm
from .pretrain import pretrain
from .losses import answer_logits, answers_for, loss_terms, scheduled_sampling_input, teacher_logits
from .runs import atomic_write_text, environment_info, prepare_run_folder, run_lock, write_eval_run, write_json
from .slices import Slices, load_slices
from .system import CompressionSystem
from .tracking import start_tracker


class DoctorFailed(RuntimeError):
    """The setup doctor found a mismatch; the message lists the failed checks."""


class NonFiniteLoss(FloatingPointError):
    """A loss term or the gradient norm became NaN/inf; the message names the step and the term."""


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


def system_module(system) -> CompressionSystem:
    return system.module if hasattr(system, "module") else system


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
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
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
    seed_everything(config.train.seed)
    lm = lm or load_lm(config.model.name, config.model.precision, device=str(accelerator.device))
    slices = slices or load_slices(config.data)
    checks = run_doctor(config, lm, slices)
    failed = [c for c in checks if not c.passed]
    if main:
        write_json(out / "doctor.json", [c.to_dict() for c in checks])
    if failed and not allow_failed_checks:
        raise DoctorFailed("setup doctor failed; fix the config or pass --allow-failed-checks to train the "
                           "broken setup on purpose:\n" + format_checks(failed))
    run_config = {"name": config.name, "kind": "trained", "data_source": slices.source,
                  "processes": accelerator.num_processes, "allow_failed_checks": allow_failed_checks,
                  "experiment": config.to_dict()}
    if main and not resume:
        write_json(out / "config.json", {**run_config, "environment": environment_info()})

    seed_everything(config.train.seed)
    system = CompressionSystem(config, lm).to(accelerator.device)
    params = system.trainable_parameters()
    if not params:
        raise ValueError(f"config '{config.name}' has nothing to train (no compressor and no trainable anchor)")
    ckpt = out / "checkpoints"
    pretrained = {}
    if config.pretrain.passages and not resume:  # on resume the saved state already holds these weights
        plog = _Log(out / "pretrain_history.jsonl", enabled=main)
        plog.reset()
        pretrained = pretrain(lm, system, slices.train, config, plog, progress and main)
        if main:
            save_weights(system, ckpt, "pretrained", pretrained)
    elif (ckpt / "pretrained.json").is_file():
        pretrained = json.loads((ckpt / "pretrained.json").read_text())
    optimizer = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=config.train.weight_decay)
    generator = torch.Generator().manual_seed(config.train.seed)
    lengths = [len(e.context) + len(e.question) + len(e.answers[0]) for e in slices.train]
    loader = DataLoader(list(range(len(slices.train))), collate_fn=list, batch_sampler=LengthBucketSampler(
        lengths, config.train.batch_size, config.train.length_window, generator))
    total_steps = config.train.epochs * math.ceil(len(slices.train) / config.train.batch_size)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.train.warmup_frac * total_steps), total_steps)
    system, optimizer, loader, scheduler = accelerator.prepare(system, optimizer, loader, scheduler)
    eval_every = config.train.eval_every or math.ceil(total_steps / config.train.epochs)
    save_every = config.train.save_every or eval_every

    state = {"step": 0, "epoch": 0, "batch": 0, "best_select_f1": -1.0, "best_step": 0, "skipped": 0,
             "seconds": 0.0}
    epoch_start = None
    log = _Log(out / "history.jsonl", enabled=main, tracker=start_tracker(config, out, enabled=main))
    if resume:
        state, epoch_start = load_state(ckpt / STATE_FILE, system_module(system), optimizer, scheduler, generator)
        log.truncate_after(state["step"])
    else:
        log.reset()
        log.write({"step": 0, "kind": "eval", **_eval_point(lm, system, slices, config)})
    step, start = state["step"], time.perf_counter() - state["seconds"]
    bar = tqdm(total=total_steps, initial=step, desc=f"train {config.name}", unit="step",
               disable=not (progress and main))
    for epoch in range(state["epoch"], config.train.epochs):
        if resume and epoch == state["epoch"]:
            generator.set_state(epoch_start)  # replay this epoch's shuffle, then skip the batches already done
            done = state["batch"]
        else:
            epoch_start, done = generator.get_state(), 0
        for batch, idx in enumerate(loader):
            if batch < done:
                continue
            examples = [slices.train[i] for i in idx]
            parts = step_losses(lm, system, examples, config, progress=step / total_steps)
            losses = {f"loss_{k}": float(accelerator.reduce(v.detach(), "mean")) for k, v in parts.items()}
            optimizer.zero_grad(set_to_none=True)
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            grad_norm = float("nan")
            if not bad:
                accelerator.backward(parts["total"])
                grad_norm = float(accelerator.clip_grad_norm_(params, config.train.grad_clip))
                bad = [] if math.isfinite(grad_norm) else ["grad_norm"]
            step += 1
            if bad:
                state["skipped"] += 1
                _non_finite(config, step, epoch, bad, {**losses, "grad_norm": grad_norm}, ckpt)
                optimizer.zero_grad(set_to_none=True)
                log.write({"step": step, "epoch": epoch, "kind": "skip", "terms": bad,
                           "skipped_total": state["skipped"], **losses})
            else:
                optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss_total']:.3f}")
            if not bad:
                log.write({"step": step, "epoch": epoch, "kind": "train", "lr": scheduler.get_last_lr()[0],
                           "grad_norm": grad_norm, "seconds": round(time.perf_counter() - start, 2), **losses})
            if step % eval_every == 0 or step == total_steps:
                point = _eval_point(lm, system, slices, config)
                log.write({"step": step, "epoch": epoch, "kind": "eval", **point})
                meta = {"step": step, "epoch": epoch, **point}
                if main:
                    save_weights(system_module(system), ckpt, "last", meta)
                if point["select_f1"] > state["best_select_f1"]:
                    state.update(best_select_f1=point["select_f1"], best_step=step)
                    if main:
                        save_weights(system_module(system), ckpt, "best", meta)
            if main and (step % save_every == 0 or step % eval_every == 0 or step == total_steps):
                state.update(step=step, epoch=epoch, batch=batch + 1, seconds=time.perf_counter() - start)
                save_state(ckpt / STATE_FILE, system_module(system), optimizer, scheduler, generator, epoch_start,
                           state)
    bar.close()
    log.close()
    train_seconds = time.perf_counter() - start
    accelerator.wait_for_everyone()
    final = system_module(system)
    load_weights(final, ckpt / "best.safetensors")
    records, summary = evaluate_system(lm, final, slices.test, config, "test", progress and main)
    metrics = {"system": f"trained:{config.name}", **summary.to_dict(), "best_step": state["best_step"],
               "best_select_f1": state["best_select_f1"], "train_seconds": round(train_seconds, 1),
               "skipped_batches": state["skipped"], "n_train": len(slices.train), "n_select": len(slices.select),
               **pretrained}
    if main:
        _write_compressed(lm, final, slices.test[: config.train.diagnostics_n], out)
        write_eval_run(out, run_config, records, metrics)
    accelerator.wait_for_everyone()
    return metrics


def _non_finite(config: ExperimentConfig, step: int, epoch: int, bad: list[str], values: dict, ckpt: Path) -> None:
    """Stop with a message naming the step and the term, or (train.on_nonfinite=skip) let the caller skip."""
    if config.train.on_nonfinite == "skip":
        return
    shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    raise NonFiniteLoss(f"non-finite {', '.join(bad)} at step {step} (epoch {epoch}): {shown}; the last good "
                        f"checkpoint is kept in {ckpt}; lower train.lr, check the data, or set "
                        f"train.on_nonfinite=skip to skip such batches (counted in history.jsonl)")


def _write_compressed(lm: LM, system: CompressionSystem, examples: Sequence[SquadExample], out: Path) -> None:
    """The final collapse diagnostics and the compressed vectors of a few test questions (for the explorer)."""
    diag = compressed_diagnostics(lm, system, examples)
    write_json(out / "diagnostics.json", diag or {})
    if system.compressor is None:
        return
    with torch.no_grad():
        slots = system.compress(lm, examples)
    save_file({"slots": slots.contiguous().cpu(), "embedding_rms": torch.tensor(lm.embedding_rms)},
              str(out / "compressed.safetensors"))
    atomic_write_text(out / "compressed_ids.txt", "\n".join(e.id for e in examples) + "\n")


class _Log:
    """history.jsonl, appended one JSON row at a time (main process only), mirrored to the tracker if any."""

    def __init__(self, path: Path, enabled: bool, tracker=None):
        self.path, self.enabled, self.tracker = path, enabled, tracker

    def reset(self) -> None:
        if self.enabled:
            atomic_write_text(self.path, "")

    def truncate_after(self, step: int) -> None:
        """On resume: drop the rows an interrupted run wrote after its last saved state."""
        if self.enabled:
            lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.is_file() else []
            if lines and not lines[-1].endswith("}"):
                lines.pop()  # the row being appended when the run was killed
            rows = [row for row in map(json.loads, lines) if row["step"] <= step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            if self.tracker is not None:
                self.tracker.log(row)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()


def _eval_point(lm, system, slices: Slices, config: ExperimentConfig) -> dict:
    _, summary = evaluate_system(lm, system, slices.select, config, "select", progress=False)
    point = {"select_em": summary.exact_match, "select_f1": summary.f1,
             "select_first_token_accuracy": summary.first_token_accuracy}
    diag = compressed_diagnostics(lm, system, slices.select[: config.train.diagnostics_n])
    if diag:
        point.update({f"diag_{k}": v for k, v in diag.items()})
    return point


def config_from_run(run_dir: Path) -> ExperimentConfig:
    data = json.loads((Path(run_dir) / "config.json").read_text())
    if "experiment" not in data:
        raise ValueError(f"{run_dir}/config.json has no 'experiment' section; is it a seqcomp training run?")
    return from_dict(data["experiment"])


def evaluate_run(run_dir: Path, n: int | str | None = None, out: Path | None = None, progress: bool = True) -> dict:
    """Re-evaluate a trained run's best checkpoint on its test slice (or the first n of a larger slice; ``"all"``:
    every dev question outside the selection articles, with a progress bar and ETA)."""
    import dataclasses

    from .slices import full_test_size

    run_dir = Path(run_dir)
    config = config_from_run(run_dir)
    if n == "all":
        n = full_test_size(config.data)
    if n is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, n_test=n))
    lm = load_lm(config.model.name, config.model.precision)
    system = CompressionSystem(config, lm)
    load_weights(system, run_dir / "checkpoints" / "best.safetensors")
    slices = load_slices(dataclasses.replace(config.data, n_train=1))
    records, summary = evaluate_system(lm, system, slices.test, config, "eval", progress)
    metrics = {"system": f"trained:{config.name}", **summary.to_dict()}
    write_eval_run(out or run_dir / f"eval-n{len(slices.test)}", {"name": config.name, "kind": "eval",
                   "run": str(run_dir), "experiment": config.to_dict()}, records, metrics)
    return metrics
