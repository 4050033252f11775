"""Frozen configuration dataclasses: the one place where every knob is named, defaulted and validated.

The same dotted names (``compressor.m``, ``generation.max_new_tokens``) are used on the CLI
(``--set compressor.m=16``), in papermill parameters and in code, and the resolved config is written
as JSON into every run folder.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the fix."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config '{key}': {msg}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # preset, hub id, local HF folder, .gguf path, or "tiny"
    precision: str = "bf16"  # autocast dtype of the frozen LM on CPU/GPU: "bf16" or "fp32"

    def __post_init__(self) -> None:
        _check(bool(self.name), "model.name", "must be a non-empty model name or path")
        _check(self.precision in ("bf16", "fp32"), "model.precision", f"'{self.precision}' is not one of bf16, fp32")


@dataclass(frozen=True)
class DataConfig:
    source: str | None = None  # SQuAD file/folder/hub id; None -> $SEQCOMP_SQUAD_DIR -> hub
    n_train: int = 2000
    n_select: int = 100  # dev questions for checkpoint selection, disjoint from the test slice
    n_test: int = 300
    seed: int = 0
    max_source_tokens: int = 384  # context tokens the compressor reads (longer ones are cut and counted)
    max_answer_tokens: int = 24  # answer tokens trained on (before the end-of-answer token); < max_new_tokens
    select_on_test: bool = False  # the diagnosed bug (B7): pick checkpoints on the reported slice
    min_answer_coverage: float = 0.95  # doctor: least share of gold answers inside what the system shows the LM

    def __post_init__(self) -> None:
        _check(self.n_train > 0, "data.n_train", f"must be > 0, got {self.n_train}")
        _check(self.n_select >= 0, "data.n_select", f"must be >= 0, got {self.n_select}")
        _check(self.n_test > 0, "data.n_test", f"must be > 0, got {self.n_test}")
        _check(self.max_source_tokens > 0, "data.max_source_tokens", "must be > 0")
        _check(self.max_answer_tokens > 0, "data.max_answer_tokens", "must be > 0")
        _check(0 <= self.min_answer_coverage <= 1, "data.min_answer_coverage", "must be a share in [0, 1]")


@dataclass(frozen=True)
class LayoutConfig:
    """What stands between the compressed slots and the answer (the Tier 1 fixes live here)."""

    bos: bool = True  # BOS token right after the compressed slots
    question_as_text: bool = True  # the question as plain text after the slots
    question_template: str = "Question: {question}\n"
    anchor: str = "Answer:"  # "" means no anchor (the diagnosed setup)
    train_anchor: bool = True  # the anchor is a trainable soft prompt initialised from its tokens
    end_of_answer: str = "\n"  # trained after every answer, generation stops at it; "" = none (bug B4)
    answer_prefix: str = " "  # answers are tokenized as prefix + text, the way they follow "Answer:"

    def __post_init__(self) -> None:
        _check("{question}" in self.question_template, "layout.question_template", "must contain '{question}'")
        _check(not self.anchor or bool(self.anchor.strip()), "layout.anchor",
               f"{self.anchor!r} is only whitespace; use visible text like 'Answer:' or '' for no anchor")


@dataclass(frozen=True)
class CompressorConfig:
    # query | pool | encoder (a trained copy of the LM's first layers) | text (full context) | truncate (first m
    # tokens) | select (m tokens matching the question)
    kind: str = "pool"
    m: int = 32  # compressed slots (or kept tokens for truncate)
    source: str = "hidden"  # what is compressed: "embeddings" (token embeddings) or "hidden" states
    source_layer: int = 6  # hidden-state layer when source == "hidden"
    compress_question: bool = False  # compress context + question (as diagnosed) instead of context only
    calibrate: bool = True  # scale outputs to the embedding RMS with a learnable gain (fix B3)
    position_scale: str = "embedding"  # "embedding" (fix B3) or "unit" (diagnosed amplitude-1 positions)
    width: int = 1024  # MLP width
    heads: int = 4  # cross-attention heads (query)
    encoder_layers: int = 6  # encoder: how many of the frozen LM's first decoder layers are copied and trained
    bidirectional: bool = False  # encoder: every source token attends to every other (no causal mask)

    def __post_init__(self) -> None:
        kinds = ("query", "pool", "encoder", "text", "truncate", "select")
        _check(self.kind in kinds, "compressor.kind", f"'{self.kind}' is not one of {', '.join(kinds)}")
        _check(self.m > 0, "compressor.m", f"must be > 0 (number of compressed slots), got {self.m}")
        _check(self.source in ("embeddings", "hidden"), "compressor.source", "must be 'embeddings' or 'hidden'")
        _check(self.source_layer >= 0, "compressor.source_layer", "must be >= 0")
        _check(self.position_scale in ("embedding", "unit"), "compressor.position_scale", "must be embedding|unit")
        _check(self.width > 0 and self.heads > 0, "compressor.width/heads", "must be > 0")
        _check(self.encoder_layers > 0, "compressor.encoder_layers", f"must be > 0, got {self.encoder_layers}")
        _check(not self.bidirectional or self.kind == "encoder", "compressor.bidirectional",
               f"only the encoder kind has attention to make bidirectional, not '{self.kind}'")


@dataclass(frozen=True)
class LossConfig:
    ce_weight: float = 1.0  # teacher-forced answer CE (mean over each example's answer tokens)
    first_token_weight: float = 0.0  # extra CE on the first answer token
    k_tokens: int = 4  # the first K answer positions used by k_weight and KD
    k_weight: float = 0.0  # extra CE on the first K answer tokens
    kd_weight: float = 0.0  # forward KL(teacher || student) on the first K answer tokens
    kd_tau: float = 1.0
    dense_kd_weight: float = 0.0  # KL(teacher || student) at every token after the head (BOS, question, anchor, answer)
    uniformity_weight: float = 0.0  # anti-collapse across inputs: uniformity of the mean-pooled slot sequences
    slot_diversity_weight: float = 0.0  # anti-collapse within a sequence: squared cosine between its slots
    scheduled_sampling: float = 0.0  # p_max: answer inputs replaced by the model's own greedy tokens, ramped 0 -> p_max

    def __post_init__(self) -> None:
        for name in ("ce_weight", "first_token_weight", "k_weight", "kd_weight", "dense_kd_weight",
                     "uniformity_weight", "slot_diversity_weight"):
            _check(getattr(self, name) >= 0, f"loss.{name}", "must be >= 0")
        _check(0 <= self.scheduled_sampling <= 1, "loss.scheduled_sampling", "must be a probability in [0, 1]")
        _check(self.k_tokens > 0, "loss.k_tokens", "must be > 0")
        _check(self.kd_tau > 0, "loss.kd_tau", "must be > 0")


# accelerate's tracker names (``accelerate.tracking.LOGGER_TYPE_TO_CLASS``), literal so configs load without it
TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    eval_every: int = 0  # steps between selection evals; 0 = once per epoch
    seed: int = 0
    diagnostics_n: int = 32  # examples used for the collapse/scale diagnostics
    save_every: int = 0  # steps between resumable training states; 0 = at every evaluation
    on_nonfinite: str = "stop"  # NaN/inf loss or gradient: "stop" (keep the last good checkpoint) or "skip" the batch
    length_window: int = 8  # batches per length-sorted window (less padding); 1 = a plain shuffle
    log_with: str = ""  # also send history.jsonl's rows to this accelerate tracker ("tensorboard", ...); "" = none

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "train.epochs", "must be > 0")
        _check(self.batch_size > 0, "train.batch_size", "must be > 0")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(0 <= self.warmup_frac < 1, "train.warmup_frac", "must be in [0, 1)")
        _check(self.eval_every >= 0 and self.save_every >= 0, "train.eval_every/save_every", "must be >= 0")
        _check(self.length_window > 0, "train.length_window", "must be > 0 (1 = a plain shuffle)")
        _check(self.on_nonfinite in ("stop", "skip"), "train.on_nonfinite",
               f"'{self.on_nonfinite}' is not one of stop, skip")
        _check(self.log_with in ("", *TRACKERS), "train.log_with",
               f"'{self.log_with}' is not one of {', '.join(TRACKERS)} (or '' for none)")


PASSAGE_SOURCES = ("train-slice", "train-split")


@dataclass(frozen=True)
class PretrainConfig:
    """Tier 3.9: a stage before QA training that teaches the compressor from unlabeled passages."""

    passages: int = 0  # distinct training contexts used; 0 = no pretraining stage
    reconstruction_ratio: float = 0.2  # share of reconstruction rows; the rest are continuation rows
    target_tokens: int = 48  # tokens regenerated (reconstruction) or continued (continuation)
    marker: str = "Repeat the passage:"  # reconstruction's task vector starts as the mean embedding of this text
    continuation_marker: str = "Continue the passage:"  # ... and continuation's as this one's
    passages_from: str = "train-slice"  # the training slice's contexts, or "train-split": every training passage
    m: int = 0  # slots while pretraining (pool/encoder only; 0 = compressor.m): pretrain at a higher ratio
    epochs: int = 1
    lr: float = 1e-3

    def __post_init__(self) -> None:
        _check(self.passages >= 0, "pretrain.passages", "must be >= 0")
        _check(0 <= self.reconstruction_ratio <= 1, "pretrain.reconstruction_ratio", "must be in [0, 1]")
        _check(self.target_tokens > 0 and self.epochs > 0 and self.lr > 0, "pretrain.target_tokens/epochs/lr",
               "must be > 0")
        _check(bool(self.marker.strip()), "pretrain.marker", "must be visible text")
        _check(bool(self.continuation_marker.strip()), "pretrain.continuation_marker", "must be visible text")
        _check(self.passages_from in PASSAGE_SOURCES, "pretrain.passages_from",
               f"'{self.passages_from}' is not one of {', '.join(PASSAGE_SOURCES)}")
        _check(self.m >= 0, "pretrain.m", "must be >= 0 (0 = compressor.m)")


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 32
    batch_size: int = 64  # finished rows leave the batch (seqcomp.generation), so wide batches pay off

    def __post_init__(self) -> None:
        _check(self.max_new_tokens > 0, "generation.max_new_tokens", "must be > 0")
        _check(self.batch_size > 0, "generation.batch_size", "must be > 0")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    compressor: CompressorConfig = field(default_factory=CompressorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def from_dict(data: dict[str, Any], cls: type = ExperimentConfig, where: str = "") -> Any:
    """Build a config from plain data (a JSON/YAML file), rejecting unknown keys by name."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                          f"valid keys here: {', '.join(where + k for k in names)}")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"config '{where}{key}' must be a mapping of its fields, got {value!r}")
            kwargs[key] = from_dict(value, hint, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, where + key)
    return cls(**kwargs)


def load_config_file(path: str | Path) -> ExperimentConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.').upper()}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return from_dict(data)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert a plain value against a field's type annotation."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"config '{key}' may not be null")
    for typ in allowed:
        if typ is bool and isinstance(value, bool):
            return value
        if typ is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if typ is str and isinstance(value, str):
            return value
    names = ", ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"config '{key}' expects {names}, got {value!r}")


def _parse_text(text: str, hint: Any, key: str) -> Any:
    """Parse a ``--set`` value typed on the command line according to the field's annotation."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if text.lower() in ("none", "null") and type(None) in allowed:
        return None
    if bool in allowed:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"--set {key}={text!r}: expected true/false")
    for typ in (int, float):
        if typ in allowed:
            try:
                return typ(text)
            except ValueError:
                raise ConfigError(f"--set {key}={text!r}: expected a number ({typ.__name__})") from None
    # escapes typed on a shell line: "\n" is a newline, "\t" a tab, "\\" a backslash; all else stays as typed
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group(1)], text)


def apply_overrides(config: ExperimentConfig, overrides: list[str] | dict[str, Any]) -> ExperimentConfig:
    """Apply ``section.key=value`` overrides (strings from the CLI, or a dict of typed values)."""
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    for dotted, value in items:
        parts = dotted.split(".")
        config = _set_path(config, parts, value, dotted)
    return config


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}
_ESCAPE = re.compile(r"\\([nt\\])")


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like section.key=value, e.g. compressor.m=16")
    key, value = text.split("=", 1)
    return key.strip(), value


def _set_path(obj: Any, parts: list[str], value: Any, dotted: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj)}
    if parts[0] not in names:
        raise ConfigError(f"unknown config key {dotted!r}; valid keys here: {', '.join(sorted(names))}")
    hint = typing.get_type_hints(type(obj))[parts[0]]
    if len(parts) > 1:
        if not dataclasses.is_dataclass(hint):
            raise ConfigError(f"unknown config key {dotted!r}: '{parts[0]}' has no sub-keys")
        return dataclasses.replace(obj, **{parts[0]: _set_path(getattr(obj, parts[0]), parts[1:], value, dotted)})
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"config key '{dotted}' is a section; set one of its fields, e.g. {dotted}.<field>=...")
    parsed = _parse_text(value, hint, dotted) if isinstance(value, str) else _coerce(value, hint, dotted)
    return dataclasses.replace(obj, **{parts[0]: parsed})


def flat_keys(config: ExperimentConfig) -> dict[str, Any]:
    """All dotted keys with their values (for papermill parameters and comparison tables)."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                out[prefix + f.name] = value

    walk(config, "")
    return out
