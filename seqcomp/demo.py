"""The main job on the embedded default: the answer-length diagnosis and every zero-shot baseline."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from .baseline_runs import run_baseline
from .baselines import KINDS
from .config import ExperimentConfig
from .data import load_squad
from .diagnose import answer_length_figure, answer_length_report, format_report
from .lm import load_lm
from .runs import write_json
from .selection import KEPT_KINDS


def baseline_table(rows: list[dict]) -> str:
    """A markdown table of EM/F1 with 95% bootstrap CIs."""
    lines = ["| system | n | EM [95% CI] | F1 [95% CI] | first-token acc | mean pred tokens | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        em_lo, em_hi = r["exact_match_ci"]
        f1_lo, f1_hi = r["f1_ci"]
        lines.append(f"| {r['system']} | {r['n']} | {r['exact_match']:.1f} [{em_lo:.1f}, {em_hi:.1f}] | "
                     f"{r['f1']:.1f} [{f1_lo:.1f}, {f1_hi:.1f}] | {100 * r['first_token_accuracy']:.1f}% | "
                     f"{r['mean_pred_tokens']:.1f} | {r.get('seconds', float('nan'))} |")
    return "\n".join(lines)


def run_demo(config: ExperimentConfig, out: Path, n: int = 200, budget: int = 32, shots: int = 2,
             kinds: tuple[str, ...] = KINDS) -> dict:
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
    table = baseline_table(rows)
    print(table, flush=True)
    summary = {"diagnosis": report.to_dict(), "baselines": rows, "seconds": round(time.perf_counter() - start, 1),
               "max_new_tokens": config.generation.max_new_tokens, "budget": budget}
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(f"# seqcomp demo\n\n```\n{format_report(report)}\n```\n\n{table}\n")
    return summary
