"""``seqcomp`` command line: a thin layer over library functions.

Known input errors (bad config, bad data, missing model, malformed predictions) end with one line naming
the cause and the fix and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import cli_notebooks, cli_train
from .checkpoint import CheckpointError
from .cli_config import add_config_args, resolve_config
from .config import ConfigError, apply_overrides
from .data import DataError
from .layout import LayoutError
from .lm import ModelLoadError
from .metrics import ScoreInputError
from .baselines import KINDS
from .runs import RunFolder, RunFolderError, run_lock

USER_ERRORS = (ConfigError, DataError, LayoutError, ModelLoadError, ScoreInputError, FileNotFoundError,
               CheckpointError, RunFolderError)


def cmd_score(args: argparse.Namespace) -> int:
    from .data import load_squad
    from .metrics import load_predictions_file, score_predictions

    predictions = load_predictions_file(args.predictions)
    golds = load_squad(args.data, args.split).golds()
    report = score_predictions(predictions, golds, source=str(args.predictions))
    result = {"exact_match": report.exact_match, "f1": report.f1}
    if args.json:
        print(json.dumps({**result, "n_questions": report.n_questions, "n_answered": report.n_answered,
                          "missing_ids": len(report.missing_ids), "extra_ids": len(report.extra_ids)}))
    else:
        print(json.dumps(result))
        if report.missing_ids:
            print(f"note: {len(report.missing_ids)} of {report.n_questions} questions have no prediction "
                  f"and score 0 (e.g. {report.missing_ids[0]})", file=sys.stderr)
        if report.extra_ids:
            print(f"note: {len(report.extra_ids)} predicted ids are not in the data and were ignored "
                  f"(e.g. {report.extra_ids[0]})", file=sys.stderr)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .answer_lengths import answer_length_figure, answer_length_report, format_report
    from .lm import load_lm
    from .slices import SYNTHETIC
    from .synthetic import key_recall_examples

    config = resolve_config(args)
    lm = load_lm(config.model.name)
    if config.data.source == SYNTHETIC:
        examples = key_recall_examples(200, seed=0)
    else:
        from .data import load_squad

        examples = load_squad(config.data.source, args.split).examples
    report = answer_length_report(examples, lm.tokenizer, config.model.name, args.split, config.layout)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    if args.figure:
        answer_length_figure(report).write_html(args.figure, include_plotlyjs=True)
        print(f"figure written to {args.figure}", file=sys.stderr)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from .baselines import run_baseline

    if args.kind in ("truncate", "select") and not args.budget:
        raise ConfigError(f"the {args.kind} baseline needs --budget M (context tokens kept, e.g. the compressor's M)")
    config = resolve_config(args)
    if args.n is not None:
        config = apply_overrides(config, {"data.n_test": args.n})
    out = Path(args.out)
    if RunFolder(out).finished and not args.overwrite:
        raise RunFolderError(f"{out} is a finished run; pass --overwrite to replace it or choose another --out")
    with run_lock(out):
        metrics = run_baseline(args.kind, config, out, budget=args.budget, shots=args.shots)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .baselines import run_baseline_suite as run_demo

    config = resolve_config(args)
    run_demo(config, Path(args.out), n=args.n, budget=args.budget)
    print(f"demo written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqcomp", description="Sequence compression for a frozen LM on SQuAD: "
                                     "baselines, diagnosis, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("score", help="score an official-format predictions file (EM/F1 in percent)")
    p.add_argument("predictions", help='JSON file {"question id": "answer text", ...}')
    p.add_argument("--data", required=True, help="SQuAD dev file/folder (official JSON, .gz, or JSONL)")
    p.add_argument("--split", default="validation")
    p.add_argument("--json", action="store_true", help="also report counts of missing/extra ids")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("diagnose", help="answer-length diagnosis and recommended max_new_tokens")
    add_config_args(p)
    p.add_argument("--split", default="validation")
    p.add_argument("--json", action="store_true")
    p.add_argument("--figure", help="write the plotly histogram to this HTML file")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("baseline", help="run a zero-shot baseline into a run folder")
    p.add_argument("kind", choices=list(KINDS))
    add_config_args(p)
    p.add_argument("--n", type=int, help="test questions (data.n_test)")
    p.add_argument("--budget", type=int, help="context tokens kept (truncate, select)")
    p.add_argument("--shots", type=int, default=2, help="solved train examples (fewshot)")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace the finished run that --out holds")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("demo", help="the main job: diagnosis + every baseline on the default model")
    add_config_args(p)
    p.add_argument("--n", type=int, default=200, help="dev questions per baseline")
    p.add_argument("--budget", type=int, default=32, help="truncation budget (= compressed slots M)")
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=cmd_demo)

    for register in (*cli_train.REGISTER, *cli_notebooks.REGISTER):
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"seqcomp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
