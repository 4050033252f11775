"""Run a zero-shot baseline end to end into a run folder."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .baselines import KINDS, baseline_prefix, uses_input_ids
from .config import ExperimentConfig
from .evaluate import predict, score
from .lm import LM, load_lm
from .runs import write_eval_run
from .slices import eval_slices, train_slice


def run_baseline(kind: str, config: ExperimentConfig, out: Path, budget: int | None = None, shots: int = 2,
                 lm: LM | None = None, progress: bool = True) -> dict:
    """Evaluate baseline ``kind`` on the config's test slice; returns metrics (also in ``out``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown baseline '{kind}'; choose one of {', '.join(KINDS)}")
    lm = lm or load_lm(config.model.name, config.model.precision)
    _, test, source = eval_slices(config.data)
    shot_examples = train_slice(dataclasses.replace(config.data, n_train=shots)) if kind == "fewshot" else ()
    start = time.perf_counter()
    gens = predict(lm, test, lambda exs: [baseline_prefix(kind, lm.tokenizer, e, budget, shot_examples) for e in exs],
                   config.generation, config.layout, via_input_ids=uses_input_ids(kind),
                   desc=f"baseline {kind}", progress=progress)
    records, summary = score(lm, test, gens, config.layout)
    metrics = {"system": f"baseline:{kind}", **summary.to_dict(), "seconds": round(time.perf_counter() - start, 1)}
    run_config = {"name": f"baseline-{kind}", "kind": "baseline", "baseline": kind, "budget": budget,
                  "shots": shots if kind == "fewshot" else 0, "data_source": str(source),
                  "answer_cleaning": f"clean_answer(end_of_answer={config.layout.end_of_answer!r}): "
                                     "cut at end-of-answer/newline, strip",
                  "experiment": config.to_dict()}
    write_eval_run(out, run_config, records, metrics)
    return metrics
