"""Use a trained compressor from Python: load a run folder (or an exported one), compress, answer, evaluate.

In the spirit of litgpt's ``LLM.load`` and transformers' ``from_pretrained``, but every answer goes through the
path evaluation uses (``CompressionSystem.prefixes`` -> ``seqcomp.evaluate.predict`` / ``score``), so what a
notebook sees is exactly what the run's metrics measured. ``tests/test_api.py`` runs the example below.

Example (after ``seqcomp train --preset tiny --out runs/tiny``; a real run works the same way)::

    import seqcomp
    from seqcomp.synthetic import key_recall_examples

    system = seqcomp.load("runs/tiny")  # a run folder, or a folder written by `seqcomp export`
    slots = system.compress(["The key is red. The river runs to the city."])  # [1, M, D] tensor
    answer = system.answer("The key is red. The river runs to the city.", "What is the key?")
    answers = system.answer_batch(["The key is red.", "The key is blue."], ["What is the key?"] * 2)
    records, summary = system.evaluate(key_recall_examples(16, seed=1))  # predictions.jsonl rows, EM/F1 + CIs
    print(slots.shape, answer, answers, summary.f1, summary.f1_ci)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import load_weights
from .config import ExperimentConfig
from .data import SquadExample
from .evaluate import predict
from .lm import LM, load_lm
from .metrics import Summary
from .runs import RunFolder, RunFolderError
from .system import CompressionSystem

CHECKPOINT = "best"  # the checkpoint a run's metrics are for (an export keeps it under the same name)


def trained_config(path: str | Path) -> ExperimentConfig:
    """The config of the trained run or export at ``path``. ``load``, ``seqcomp eval`` and ``seqcomp export`` share
    this check, so a wrong folder gets one line naming the folder and what it lacks, not a bare 'No such file'."""
    folder = RunFolder(path)
    hint = "give a folder written by `seqcomp train --out` or `seqcomp export`"
    if not folder.path.is_dir():
        raise RunFolderError(f"{folder.path} {'is not a folder' if folder.path.exists() else 'does not exist'}; {hint}")
    missing = [folder.relative(p) for p in (folder.config_path, folder.weights_path(CHECKPOINT)) if not p.is_file()]
    if missing:
        raise RunFolderError(f"{folder.path} is not a trained seqcomp run: {' and '.join(missing)} missing; {hint}")
    return folder.experiment_config(hint)


def _examples(contexts: Sequence[str], questions: Sequence[str]) -> list[SquadExample]:
    """Ad-hoc questions as the examples every system reads (no gold answers: nothing to score)."""
    if isinstance(contexts, str) or isinstance(questions, str):
        raise TypeError("pass a list of contexts and a list of questions, not a single string")
    if len(contexts) != len(questions):
        raise ValueError(f"{len(contexts)} contexts but {len(questions)} questions; give one question per context")
    return [SquadExample(id=f"q{i}", title="", context=c, question=q, answers=(), answer_starts=())
            for i, (c, q) in enumerate(zip(contexts, questions))]


class TrainedCompressor:
    """A trained system and the frozen LM it was trained for, ready to compress, answer and evaluate."""

    def __init__(self, path: Path, config: ExperimentConfig, lm: LM, system: CompressionSystem, metrics: dict):
        self.path, self.config, self.lm, self.system, self.metrics = path, config, lm, system, metrics

    @classmethod
    def load(cls, path: str | Path, lm: LM | None = None, device: str | None = None) -> TrainedCompressor:
        """Load the best checkpoint of a run folder or an export. ``lm`` reuses a loaded frozen LM (it must be the
        model the run was trained for); otherwise ``config.model`` is loaded on ``device`` (default: cuda if
        available, else cpu)."""
        path = Path(path)
        config = trained_config(path)
        if lm is not None and device is not None:
            raise ValueError("pass lm or device, not both: a given lm stays on its own device")
        if lm is None:
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            lm = load_lm(config.model.name, config.model.precision, device=device)
        elif lm.name != config.model.name:
            raise ValueError(f"{path} was trained for model '{config.model.name}' but the given lm is '{lm.name}'; "
                             f"pass that model or no lm")
        folder = RunFolder(path)
        system = CompressionSystem(config, lm)
        load_weights(system, folder.weights_path(CHECKPOINT))
        system.to(lm.device).eval()
        metrics = folder.read_metrics() if folder.finished else {}
        return cls(path, config, lm, system, metrics)

    def __repr__(self) -> str:
        cc = self.config.compressor
        return (f"TrainedCompressor('{self.path}': {self.config.name}, {cc.kind} M={cc.m}, "
                f"frozen LM '{self.lm.name}', test F1 {self.metrics.get('f1', 'n/a')})")

    @torch.no_grad()
    def compress(self, contexts: Sequence[str], questions: Sequence[str] | None = None) -> torch.Tensor:
        """The compressed slots [B, M, D] (fp32) the frozen LM reads for these passages. ``questions`` only
        matter for a compressor trained with ``compressor.compress_question``, which needs them."""
        if self.config.compressor.compress_question and questions is None:
            raise ValueError(f"{self.path} compresses context + question (compressor.compress_question); "
                             f"pass questions=[...] too")
        return self.system.compress(self.lm, _examples(contexts, questions or [""] * len(contexts)))

    def answer(self, context: str, question: str) -> str:
        """The answer the run's evaluation would give to one question about ``context``."""
        return self.answer_batch([context], [question])[0]

    def answer_batch(self, contexts: Sequence[str], questions: Sequence[str], progress: bool = False) -> list[str]:
        """Answers to one question per context, batched by ``generation.batch_size``, in input order."""
        examples = _examples(contexts, questions)
        gens = predict(self.lm, examples, lambda exs: self.system.prefixes(self.lm, exs), self.config.generation,
                       self.config.layout, desc="answer", progress=progress)
        return [g.answer for g in gens]

    def evaluate(self, examples: Sequence[SquadExample], progress: bool = True) -> tuple[list[dict], Summary]:
        """EM/F1 (with 95% bootstrap CIs) on ``examples`` and the per-question records of ``predictions.jsonl``,
        computed by the function training uses for selection and test metrics."""
        from .trainer import evaluate_system

        return evaluate_system(self.lm, self.system, list(examples), self.config, "evaluate", progress)


def load(path: str | Path, lm: LM | None = None, device: str | None = None) -> TrainedCompressor:
    """``seqcomp.load(path)``: a trained run folder or an export as a ``TrainedCompressor``."""
    return TrainedCompressor.load(path, lm=lm, device=device)
