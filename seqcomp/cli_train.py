"""CLI commands for training, evaluation and the setup doctor (registered by ``seqcomp.cli``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def cmd_doctor(args: argparse.Namespace) -> int:
    from .cli import resolve_config
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
    from .cli import resolve_config
    from .trainer import DoctorFailed, train

    config = resolve_config(args)
    try:
        metrics = train(config, Path(args.out), allow_failed_checks=args.allow_failed_checks)
    except DoctorFailed as err:
        print(f"seqcomp train: {err}")
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .trainer import evaluate_run

    metrics = evaluate_run(Path(args.run_dir), n=args.n, out=Path(args.out) if args.out else None)
    print(json.dumps(metrics, indent=2))
    return 0


def register_doctor(sub) -> None:
    from .cli import _add_config_args

    p = sub.add_parser("doctor", help="check a config for every known train/eval mismatch (exit 1 on failure)")
    _add_config_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)


def register_train(sub) -> None:
    from .cli import _add_config_args

    p = sub.add_parser("train", help="train a compressor (the doctor runs first) into a run folder")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--allow-failed-checks", action="store_true",
                   help="train even if the doctor fails (to reproduce a broken setup on purpose)")
    p.set_defaults(func=cmd_train)


def register_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained run's best checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, help="number of test questions (default: the run's n_test)")
    p.add_argument("--out", help="output folder (default RUN_DIR/eval-nN)")
    p.set_defaults(func=cmd_eval)


REGISTER = [register_doctor, register_train, register_eval]
