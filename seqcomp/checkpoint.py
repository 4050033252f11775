"""Checkpoints without pickle: compressor weights and the full training state as safetensors + JSON.

``best``/``last`` hold the trainable system's weights (``<tag>.safetensors`` + ``<tag>.json``). ``state``
holds everything ``seqcomp train --resume`` needs to continue bit-for-bit: weights, AdamW moments, the
scheduler, every RNG, the data order (the shuffle generator at the start of the epoch and the batches
already taken) and the trainer's counters. Each is one file written to a temp name, fsynced and renamed,
so a run killed at any moment (SIGKILL included) keeps its previous complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .runs import STATE_FILE, checkpoint_files, write_json

# the state file is named with the run folder's other names (seqcomp.runs); re-exported for this module's callers
__all__ = ["STATE_FILE", "CheckpointError", "load_state", "load_weights", "read_progress", "save_state", "save_weights"]


class CheckpointError(ValueError):
    """A checkpoint does not fit the system/config it is loaded into; the message names both sides."""


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def save_weights(module: torch.nn.Module, folder: Path, tag: str, meta: dict) -> None:
    """``<tag>.safetensors`` (the module's state) and ``<tag>.json`` (step, metrics), each atomic."""
    weights, meta_file = checkpoint_files(folder, tag)
    _save_atomic(dict(module.state_dict()), weights)
    write_json(meta_file, meta)


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load weights saved by ``save_weights`` (never unpickles); any mismatch names both shapes."""
    _load_into(module, _read(path, lambda: load_file(str(path))), path)


def _read(path: Path, reader):
    """Run a safetensors reader; a missing file or a non-safetensors file (e.g. a pickle) gets a clear error."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return reader()
    except SafetensorError as err:
        raise CheckpointError(f"{path} is not a safetensors checkpoint ({err}); seqcomp never unpickles "
                              f"checkpoints: convert it with safetensors.torch.save_file where you trust it") from None


def _load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit this system: it lacks {missing} and has extra "
                              f"{unexpected}; load it with the config (compressor kind, source, layout) it was "
                              f"trained with")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise CheckpointError(f"checkpoint {path}: '{key}' has shape {tuple(value.shape)} but this config builds "
                                  f"{tuple(own[key].shape)}; load it with the config (model, compressor.m, width) "
                                  f"it was trained with")
    module.load_state_dict(state)


def save_state(path: Path, module: torch.nn.Module, optimizer, scheduler, loader_generator: torch.Generator,
               epoch_generator_state: torch.Tensor, progress: dict) -> None:
    """One file with everything needed to resume; ``progress`` is the trainer's JSON-able counters."""
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for name, value in slots.items():
            tensors[f"optimizer.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.loader"] = loader_generator.get_state()
    tensors["rng.epoch_start"] = epoch_generator_state
    np_state = np.random.get_state()
    meta = {
        "progress": progress,
        "optimizer_param_groups": opt["param_groups"],
        "scheduler": scheduler.state_dict(),
        "rng_python": random.getstate(),
        "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    _save_atomic(tensors, Path(path), {"seqcomp": json.dumps(meta)})


def _read_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
        if "seqcomp" not in metadata:
            raise CheckpointError(f"{path} is a safetensors file but not a seqcomp training state")
        return json.loads(metadata["seqcomp"]), {key: fh.get_tensor(key) for key in fh.keys()}


def read_progress(path: Path) -> dict:
    """The trainer's counters in a saved state (its stage, step, ...) without loading any tensor."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run has no resumable state yet (it saves one at every "
                              f"evaluation and every train.save_every steps); start it over with --overwrite")
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
    if "seqcomp" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a seqcomp training state")
    return json.loads(metadata["seqcomp"])["progress"]


def load_state(path: Path, module: torch.nn.Module, optimizer, scheduler,
               loader_generator: torch.Generator) -> tuple[dict, torch.Tensor]:
    """Restore what ``save_state`` wrote; returns (progress counters, shuffle state at the epoch's start)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run has no resumable state yet (it saves one at every "
                              f"evaluation and every train.save_every steps); start it over with --overwrite")
    meta, tensors = _read(path, lambda: _read_state(path))
    _load_into(module, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["optimizer_param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    loader_generator.set_state(tensors["rng.loader"])
    version, state, gauss = meta["rng_python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = meta["rng_numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    return meta["progress"], tensors["rng.epoch_start"]
