"""CLI commands for training, evaluation and the setup doctor (registered by ``seqcomp.cli``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .cli_config import add_config_args, resolve_config
from .runs import RunFolder


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import format_checks, run_doctor
    from .lm import load_lm
    from .slices import load_slices

    config = resolve_config(args)
    lm = load_lm(config.model.name, config.model.precision)
    slices = load_slices(dataclasses.replace(config.data, n_train=1))
    checks = run_doctor(config, lm, slices)
    if args.json:
        print(json.dumps({"preset": config.name, "passed": all(c.passed for c in checks),
                          "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        print(f"setup doctor: {config.name}")
        print(format_checks(checks))
        print(f"{sum(c.passed for c in checks)} passed, {sum(not c.passed for c in checks)} failed")
    return 0 if all(c.passed for c in checks) else 1


def cmd_train(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .stages import NonFiniteLoss
    from .trainer import DoctorFailed, train

    if args.resume:
        if args.out or args.overrides or args.config or args.model or args.data or args.preset != "tier1":
            raise ConfigError("--resume RUN_DIR continues a run with its own saved config; drop --out, --preset, "
                              "--config, --set, --model and --data")
        run_dir = Path(args.resume)
        folder = RunFolder(run_dir)
        config, allow = folder.experiment_config(), folder.read_config().get("allow_failed_checks", False)
    elif not args.out:
        raise ConfigError("give --out RUN_DIR for a new run (or --resume RUN_DIR to continue one)")
    else:
        run_dir, config, allow = Path(args.out), resolve_config(args), args.allow_failed_checks
    try:
        metrics = train(config, run_dir, allow_failed_checks=allow, resume=bool(args.resume),
                        overwrite=args.overwrite)
    except (DoctorFailed, NonFiniteLoss) as err:
        print(f"seqcomp train: {err}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .api import trained_config
    from .trainer import evaluate_run

    trained_config(args.run_dir)  # a folder that is not a run: one line naming it and what it lacks
    metrics = evaluate_run(Path(args.run_dir), n=args.n, out=Path(args.out) if args.out else None,
                           batch_size=args.batch_size)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run, push_to_hub

    out = export_run(args.run_dir, args.out_dir)
    print(f"exported {args.run_dir} to {out} (model card: {out / 'README.md'})")
    if args.push_to_hub:
        print(f"pushed to the Hub: {push_to_hub(out, args.push_to_hub)}")
    return 0


def register_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="check a config for every known train/eval mismatch (exit 1 on failure)")
    add_config_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)


def register_train(sub) -> None:
    p = sub.add_parser("train", help="train a compressor (the doctor runs first) into a run folder")
    add_config_args(p)
    p.add_argument("--out", help="run folder (a new one, or an old one with --overwrite)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last saved state")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out already holds")
    p.add_argument("--allow-failed-checks", action="store_true",
                   help="train even if the doctor fails (to reproduce a broken setup on purpose)")
    p.set_defaults(func=cmd_train)


def _count_or_all(text: str) -> int | str:
    if text == "all":
        return text
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"--n {text!r}: give a positive number of questions or 'all'")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number")
    return int(text)


def register_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained run's best checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--n", type=_count_or_all, help="number of test questions (default: the run's n_test); 'all': "
                   "every dev question outside the selection articles")
    p.add_argument("--batch-size", type=_positive, help="questions generated at once (default: the run's "
                   "generation.batch_size; a wider batch is faster, finished answers leave it)")
    p.add_argument("--out", help="output folder (default RUN_DIR/eval-nN)")
    p.set_defaults(func=cmd_eval)


def register_export(sub) -> None:
    p = sub.add_parser("export", help="a self-contained folder with a trained run's weights, config, metrics and a "
                       "model card (seqcomp.load reads it)")
    p.add_argument("run_dir", help="a finished trained run folder")
    p.add_argument("out_dir", help="a new (or empty) folder")
    p.add_argument("--push-to-hub", metavar="REPO", help="also upload the folder to this Hugging Face Hub repo")
    p.set_defaults(func=cmd_export)


REGISTER = [register_doctor, register_train, register_eval, register_export]
