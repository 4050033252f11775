"""Zero-shot text baselines, as prefixes in the one layout and as runs: text, fewshot, none, truncate, select, replay.

``truncate`` keeps the whole question and spends the token budget on the context (bug B8: the earlier
truncation cut ``Context ... Question`` from the end and always lost the question). ``replay`` is the
``text`` prompt fed as its own token embeddings through ``inputs_embeds``: it must equal ``text``
exactly, which shows the embedding interface itself is sound. ``select`` keeps the M context tokens that best
match the question instead of the first M (``seqcomp.selection``). The prompts themselves are
``seqcomp.prompts``'s, shared with the trained text systems.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

from .answer_lengths import answer_length_figure, answer_length_report, format_report
from .config import ExperimentConfig
from .data import SquadExample, load_squad
from .evaluate import predict, score
from .lm import LM, load_lm
from .metrics import results_table
from .prompts import Segment, context_prefix, fewshot_prefix, kept_context_prefix, question_prefix
from .runs import RunFolder, write_json
from .selection import KEPT_KINDS
from .slices import eval_slices, train_slice

KINDS = ("text", "fewshot", "none", "truncate", "select", "replay")


def baseline_prefix(kind: str, tokenizer, example: SquadExample, budget: int | None = None,
                    shots: Sequence[SquadExample] = ()) -> list[Segment]:
    """The prompt of a baseline as a one-layout prefix (all segments are token ids)."""
    if kind in ("text", "replay"):
        return context_prefix(tokenizer, example, with_question=True)
    if kind == "none":
        return question_prefix(tokenizer, example)
    if kind in KEPT_KINDS:
        if budget is None or budget <= 0:
            raise ValueError(f"the {kind} baseline needs --budget M > 0 (context tokens kept)")
        return kept_context_prefix(kind, tokenizer, example, budget, with_question=True)
    if kind == "fewshot":
        if not shots:
            raise ValueError("the fewshot baseline needs solved examples (shots)")
        return fewshot_prefix(tokenizer, example, shots)
    raise ValueError(f"unknown baseline '{kind}'; choose one of {', '.join(KINDS)}")


def uses_input_ids(kind: str) -> bool:
    """Every baseline but ``replay`` generates from token ids, the LM's ordinary text path."""
    return kind != "replay"


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
    RunFolder(out).write_eval(run_config, records, metrics)
    return metrics


def run_baseline_suite(config: ExperimentConfig, out: Path, n: int = 200, budget: int = 32, shots: int = 2,
             kinds: tuple[str, ...] = KINDS) -> dict:
    """``seqcomp demo``: the answer-length diagnosis and every zero-shot baseline into ``out`` (``make demo`` runs
    the whole notebook pipeline instead, ``seqcomp.pipeline``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    lm = load_lm(config.model.name, config.model.precision)
    dev = load_squad(config.data.source, "validation")
    report = answer_length_report(dev.examples, lm.tokenizer, config.model.name, "validation", config.layout)
    print(format_report(report), flush=True)
    write_json(out / "diagnosis.json", report.to_dict())
    answer_length_figure(report).write_html(out / "answer_lengths.html", include_plotlyjs=True)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, n_test=n),
                                 generation=dataclasses.replace(config.generation,
                                                                max_new_tokens=report.recommended_max_new_tokens))
    rows = []
    for kind in kinds:
        rows.append(run_baseline(kind, config, out / f"baseline-{kind}", budget=budget if kind in KEPT_KINDS else None,
                                 shots=shots, lm=lm))
    table = results_table(rows)
    print(table, flush=True)
    summary = {"diagnosis": report.to_dict(), "baselines": rows, "seconds": round(time.perf_counter() - start, 1),
               "max_new_tokens": config.generation.max_new_tokens, "budget": budget}
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(f"# seqcomp demo\n\n```\n{format_report(report)}\n```\n\n{table}\n")
    return summary
