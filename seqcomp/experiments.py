"""What the notebooks call: parameters -> config overrides, train-or-reuse of systems and baselines, the ablation
grid of notebook 04, and the small tables they show, so every system in them is configured, run and compared the
same way and the notebooks stay calls and prose. Executing notebooks as batch jobs is ``seqcomp.pipeline``'s.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import ExperimentConfig, apply_overrides, flat_keys, from_dict
from .presets import ABLATIONS, ENCODER_ABLATIONS, get_preset
from .runs import Run, RunFolder, finished_runs, load_run, project_path

__all__ = ["project_path"]  # re-exported: notebooks resolve out_dir with it


def experiment_overrides(model: str, data: str | None, n_train: int, n_eval: int, n_select: int, m: int,
                         epochs: int, seed: int, batch_size: int, precision: str) -> dict[str, Any]:
    """The notebook parameters as config overrides shared by every system, so all answer the same questions
    (the test slice depends on data, seed, n_eval and n_select). The tiny model runs in fp32 with the
    ``tiny`` preset's small compressor."""
    tiny = get_preset("tiny") if model == "tiny" else None
    return {"model.name": model, "model.precision": "fp32" if tiny else precision, "data.source": data,
            "data.n_train": n_train, "data.n_test": n_eval, "data.n_select": n_select, "data.seed": seed,
            "compressor.m": m, "train.epochs": epochs, "train.batch_size": batch_size, "train.seed": seed,
            **({"compressor.width": tiny.compressor.width, "data.max_source_tokens": tiny.data.max_source_tokens,
                "compressor.source_layer": 1} if tiny else {})}


def generation_fixes(diagnosis: dict) -> dict[str, int]:
    """Tier 1 fix 1 from the diagnosis: generate the recommended length and train on shorter answers."""
    n = int(diagnosis["recommended_max_new_tokens"])
    return {"generation.max_new_tokens": n, "data.max_answer_tokens": max(1, n - 1)}


def read_output(path: Path, made_by: str) -> dict | list:
    """A JSON file an earlier notebook wrote; missing means that notebook has not run with this out_dir."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing: run {made_by} first with the same out_dir")
    return json.loads(Path(path).read_text())


def validation_examples(data) -> list:
    """The questions the answer-length diagnosis counts: all of SQuAD dev, or the synthetic eval pool."""
    import dataclasses

    from .slices import SYNTHETIC, eval_slices

    if data.source == SYNTHETIC:
        select, test, _ = eval_slices(dataclasses.replace(data, select_on_test=False))
        return [*select, *test]
    from .data import load_squad

    return list(load_squad(data.source, "validation").examples)


def load_matching_run(path: Path, config: ExperimentConfig, made_by: str) -> Run:
    """A run an earlier notebook trained, checked to be exactly ``config`` (name aside) before it is reused."""
    if not RunFolder(path).finished:
        raise FileNotFoundError(f"{path} is not a finished run: run {made_by} first with the same parameters")
    run = load_run(path)
    differ = config_differences(run.config, config)
    if differ:
        raise ValueError(f"{path} was trained with other settings ({', '.join(differ)}); rerun {made_by} with "
                         "the same parameters as this notebook")
    return run


def check_same_questions(runs: Sequence[Run]) -> None:
    """Systems are only comparable on the same test questions (same data, seed, n_eval and n_select)."""
    first = [p["id"] for p in runs[0].predictions]
    for run in runs[1:]:
        if [p["id"] for p in run.predictions] != first:
            raise ValueError(f"{run.path} answered other test questions than {runs[0].path}; rerun the "
                             "notebooks with the same data, seed, n_eval and n_select")


def train_or_reuse(config: ExperimentConfig, folder: Path, lm, allow_failed_checks: bool = False) -> Run:
    """A notebook's training step: reuse the finished run in ``folder`` if it was trained with exactly
    ``config``, resume it if it was interrupted with that config, else train it (replacing a run trained with
    other parameters). Re-executing a notebook thus picks up where it stopped and never mixes settings."""
    from .trainer import train

    run = RunFolder(folder)
    same = run.started and not config_differences(run.read_config(), config)
    if same and run.finished:
        return load_run(run.path)
    resume = same and run.resumable
    train(config, run.path, lm=lm, allow_failed_checks=allow_failed_checks, progress=False, resume=resume,
          overwrite=not resume and run.started)
    return load_run(run.path)


def config_differences(run_config: dict, config: ExperimentConfig) -> list[str]:
    """The dotted keys (name aside) where a run folder's ``config.json`` differs from ``config``."""
    theirs, ours = flat_keys(from_dict(run_config["experiment"])), flat_keys(config)
    return sorted(k for k in ours if k != "name" and theirs.get(k) != ours[k])


def slug(name: str) -> str:
    """A folder name for a display name: ``"+ first-token CE + KD (tier2)"`` -> ``first-token-ce-kd-tier2``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def compression_ratio(lm, examples: Sequence, m: int, max_source_tokens: int) -> float:
    """Mean context tokens the compressor reads (capped at ``max_source_tokens``) per compressed slot."""
    from .layout import text_ids

    lengths = [min(len(text_ids(lm.tokenizer, e.context)), max_source_tokens) for e in examples]
    return sum(lengths) / len(lengths) / m


def ablation_row(variant: str, m: int, ratio: float, run: Run) -> dict:
    """One row of the ablation table: the run's test metrics and final collapse diagnostics."""
    keys = ("n", "exact_match", "exact_match_ci", "f1", "f1_ci", "first_token_accuracy", "train_seconds", "seconds")
    diag = {k: run.diagnostics[k] for k in ("cross_input_cosine", "within_sequence_cosine", "effective_rank",
                                            "rms_ratio") if k in run.diagnostics}
    return {"variant": variant, "m": m, "ratio": None if ratio is None else round(ratio, 2),
            **{k: run.metrics[k] for k in keys if k in run.metrics}, **diag}


def examples_table(joined: Sequence[dict]) -> list[dict]:
    """Rows of ``widgets.join_predictions`` as question, gold and each run's answer with its F1."""
    return [{"question": r["question"], "gold": " | ".join(r["golds"]),
             **{label: f"{e['prediction']!r} (F1 {100 * e['f1']:.0f})" for label, e in r["per_run"].items()}}
            for r in joined]


def doctor_failures(run: Run) -> list[str]:
    """The names of the doctor checks a trained run failed (``doctor.json``)."""
    return [c["name"] for c in run.folder.read_doctor() if not c["passed"]]


def budget_rows(root: Path) -> list[dict]:
    """One row per finished trained run under ``root``: its config name, training questions and test metrics (the
    points of ``widgets.budget_figure``). Runs must share their test questions to be compared; the caller checks."""
    keys = ("n", "exact_match", "exact_match_ci", "f1", "f1_ci", "mean_pred_tokens", "train_seconds")
    rows = []
    for run in finished_runs(root):
        metrics, config = run.read_metrics(), run.read_config()
        if config.get("kind") == "trained" and "n_train" in metrics:
            bos = config["experiment"]["layout"]["bos"]
            rows.append({"system": config["name"] + ("" if bos else " (no BOS)"), "n_train": metrics["n_train"],
                         "run": run.path.name,
                         **{k: metrics[k] for k in keys if k in metrics}})
    return rows


def baseline_or_reuse(kind: str, config: ExperimentConfig, folder: Path, lm, budget: int | None = None) -> Run:
    """A notebook's zero-shot baseline: reuse the finished run in ``folder`` if it ran exactly ``config`` with this
    kind and budget, else (re)run it; the baseline counterpart of ``train_or_reuse``."""
    from .baselines import run_baseline

    run = RunFolder(folder)
    if run.finished:
        stored = run.read_config()
        if (stored.get("baseline"), stored.get("budget")) == (kind, budget) and not config_differences(stored, config):
            return load_run(run.path)
    run_baseline(kind, config, run.path, budget=budget, lm=lm, progress=False)
    return load_run(run.path)


def report_line(variant: str, m: int | str, run: Run) -> str:
    """One progress line of a grid: variant, M, EM/F1 and the seconds it took."""
    seconds = run.metrics.get("train_seconds") or run.metrics.get("seconds") or 0.0
    return (f"M={str(m):>4}  {variant:<32} EM {run.metrics['exact_match']:5.1f}  F1 {run.metrics['f1']:5.1f}  "
            f"({seconds:.0f} s)")


def ablation_grid(lm, variants: Sequence[str], ms: Sequence[int], overrides: Callable[[int], dict], out: Path,
                  ratios: dict[int, float], report: Callable[[str], None] = print) -> tuple[list[dict], dict]:
    """Notebook 04's grid: the trained text path once, then at every M zero-shot truncation and selection, trained
    truncation and selection, and every variant of ``ABLATIONS`` or ``ENCODER_ABLATIONS`` (tier1 + its overrides),
    each trained or reused
    one at a time (``overrides(m)``: the notebook's shared settings). Returns the table rows and the runs by
    (variant, M); every system answered the same test questions (checked)."""
    def config(preset: str, m: int, extra: dict | None = None) -> ExperimentConfig:
        return apply_overrides(get_preset(preset), {**overrides(m), **(extra or {})})

    known = {**ABLATIONS, **ENCODER_ABLATIONS}
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(known)}")
    out = Path(out)
    text = train_or_reuse(config("text-ceiling", ms[0]), out / "trained-text", lm)
    rows, runs = [ablation_row("trained text", None, None, text)], {}
    report(report_line("trained text", "-", text))
    for m in ms:
        folder = out / f"m={m}"
        builds = {f"zero-shot {kind}": lambda k=kind: baseline_or_reuse(k, config("tier1", m), folder / f"zero-shot-{k}",
                                                                       lm, budget=m)
                  for kind in ("truncate", "select")}
        builds["trained truncate"] = lambda: train_or_reuse(config("truncate-trained", m), folder / "trained-truncate", lm)
        builds["trained select"] = lambda: train_or_reuse(config("select-trained", m), folder / "trained-select", lm)
        for variant in variants:
            builds[variant] = lambda v=variant: train_or_reuse(config("tier1", m, known[v]), folder / slug(v), lm)
        for variant, build in builds.items():  # one at a time, so progress is visible
            runs[(variant, m)] = build()
            report(report_line(variant, m, runs[(variant, m)]))
            rows.append(ablation_row(variant, m, ratios[m], runs[(variant, m)]))
    check_same_questions([text, *runs.values()])
    return rows, runs
