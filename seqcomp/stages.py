"""The one optimisation loop that every training stage runs: pretraining on passages, then QA fine-tuning.

A ``Stage`` says what differs between them (its rows, its loss, its optimizer and schedule, its history file,
whether it evaluates); ``run_stage`` owns what must not differ: accelerate's backward and gradient clipping,
the non-finite guard, one history row per step, the progress bar, and the resumable state in
``checkpoints/state.safetensors``. The state names its stage, so ``seqcomp train --resume`` continues a run
killed during pretraining inside pretraining, and one killed during fine-tuning without redoing pretraining.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from .checkpoint import load_state, save_state, save_weights
from .config import ExperimentConfig
from .runs import RunFolder

PRETRAIN, FINETUNE = "pretrain", "train"


class NonFiniteLoss(FloatingPointError):
    """A loss term or the gradient norm became NaN/inf; the message names the stage, the step and the term."""


@dataclass
class Stage:
    name: str  # PRETRAIN or FINETUNE: the kind of its history rows and the label of its progress bar
    loader: Iterable[list[int]]  # batches of row indices, reshuffled each epoch from ``generator``
    generator: torch.Generator
    losses: Callable[[list[int], float], dict[str, torch.Tensor]]  # (row indices, progress in [0, 1]) -> terms
    params: list[torch.nn.Parameter]
    optimizer: Any
    scheduler: Any
    epochs: int
    steps_per_epoch: int
    log: Any  # a history log: reset / truncate_after / write
    save_every: int
    evaluate: Callable[[], dict] | None = None  # a selection point ({"select_f1": ...}); None: never evaluates
    eval_every: int = 0

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def fresh_state(name: str) -> dict:
    return {"stage": name, "step": 0, "epoch": 0, "batch": 0, "best_select_f1": -1.0, "best_step": 0,
            "skipped": 0, "seconds": 0.0}


def system_module(system):
    """The system under accelerate's wrapper (DDP), if any."""
    return system.module if hasattr(system, "module") else system


def run_stage(stage: Stage, system, accelerator, config: ExperimentConfig, folder: RunFolder, resume: bool,
              progress: bool) -> dict:
    """Run ``stage`` to its end (from its saved state when ``resume``); returns its final counters.

    A stage that evaluates keeps ``last``/``best`` weights (best by selection F1) at every evaluation; every
    stage saves the resumable state every ``save_every`` steps, at evaluations and at its last step.
    """
    main = accelerator.is_main_process
    module = system_module(system)
    ckpt = folder.checkpoints
    total = stage.total_steps
    state, epoch_start = fresh_state(stage.name), None
    if resume:
        state, epoch_start = load_state(folder.state_path, module, stage.optimizer, stage.scheduler, stage.generator)
        stage.log.truncate_after(state["step"])
    else:
        stage.log.reset()
        if stage.evaluate is not None:
            stage.log.write({"step": 0, "kind": "eval", **stage.evaluate()})
    step, start = state["step"], time.perf_counter() - state["seconds"]
    bar = tqdm(total=total, initial=step, desc=f"{stage.name} {config.name}", unit="step",
               disable=not (progress and main))
    for epoch in range(state["epoch"], stage.epochs):
        if resume and epoch == state["epoch"]:
            stage.generator.set_state(epoch_start)  # replay this epoch's shuffle, then skip the batches done
            done = state["batch"]
        else:
            epoch_start, done = stage.generator.get_state(), 0
        for batch, idx in enumerate(stage.loader):
            if batch < done:
                continue
            parts = stage.losses(idx, step / total)
            losses = {f"loss_{k}": float(accelerator.reduce(v.detach(), "mean")) for k, v in parts.items()}
            stage.optimizer.zero_grad(set_to_none=True)
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            grad_norm = float("nan")
            if not bad:
                accelerator.backward(parts["total"])
                grad_norm = float(accelerator.clip_grad_norm_(stage.params, config.train.grad_clip))
                bad = [] if math.isfinite(grad_norm) else ["grad_norm"]
            step += 1
            if bad:
                state["skipped"] += 1
                _non_finite(config, stage.name, step, epoch, bad, {**losses, "grad_norm": grad_norm}, ckpt)
                stage.optimizer.zero_grad(set_to_none=True)
                stage.log.write({"step": step, "epoch": epoch, "kind": "skip", "terms": bad,
                                 "skipped_total": state["skipped"], **losses})
            else:
                stage.optimizer.step()
            stage.scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss_total']:.3f}")
            if not bad:
                stage.log.write({"step": step, "epoch": epoch, "kind": stage.name,
                                 "lr": stage.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                                 "seconds": round(time.perf_counter() - start, 2), **losses})
            evaluated = stage.evaluate is not None and (step % stage.eval_every == 0 or step == total)
            if evaluated:
                point = stage.evaluate()
                stage.log.write({"step": step, "epoch": epoch, "kind": "eval", **point})
                meta = {"step": step, "epoch": epoch, **point}
                if main:
                    save_weights(module, ckpt, "last", meta)
                if point["select_f1"] > state["best_select_f1"]:
                    state.update(best_select_f1=point["select_f1"], best_step=step)
                    if main:
                        save_weights(module, ckpt, "best", meta)
            if main and (step % stage.save_every == 0 or evaluated or step == total):
                state.update(step=step, epoch=epoch, batch=batch + 1, seconds=time.perf_counter() - start)
                save_state(folder.state_path, module, stage.optimizer, stage.scheduler, stage.generator,
                           epoch_start, state)
    bar.close()
    state.update(step=step, seconds=time.perf_counter() - start)
    return state


def _non_finite(config: ExperimentConfig, stage: str, step: int, epoch: int, bad: list[str], values: dict,
                ckpt: Path) -> None:
    """Stop with a message naming the stage, step and term, or (train.on_nonfinite=skip) let the caller skip."""
    if config.train.on_nonfinite == "skip":
        return
    shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    lr = "pretrain.lr" if stage == PRETRAIN else "train.lr"
    raise NonFiniteLoss(f"non-finite {', '.join(bad)} at step {step} of {stage} (epoch {epoch}): {shown}; the last "
                        f"good checkpoint is kept in {ckpt}; lower {lr}, check the data, or set "
                        f"train.on_nonfinite=skip to skip such batches (counted in the history)")
