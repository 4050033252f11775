"""The config arguments every config-taking CLI command shares (``--preset``, ``--config``, ``--set``, ``--model``,
``--data``) and the config they resolve to. Its own module so ``seqcomp.cli`` and the command modules it registers
(``cli_train``) both import it without importing each other."""

from __future__ import annotations

import argparse

from .config import ExperimentConfig, apply_overrides, load_config_file
from .presets import PRESETS, get_preset


def add_config_args(p: argparse.ArgumentParser, default_preset: str | None = "tier1") -> None:
    p.add_argument("--preset", default=default_preset, help=f"named config: {', '.join(PRESETS)}")
    p.add_argument("--config", help="a JSON/YAML config file (instead of --preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set compressor.m=16 (repeatable)")
    p.add_argument("--model", help="shortcut for --set model.name=...")
    p.add_argument("--data", help="SQuAD file/folder/hub id (shortcut for --set data.source=...)")


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    config = load_config_file(args.config) if args.config else get_preset(args.preset)
    overrides = list(args.overrides)
    if getattr(args, "model", None):
        overrides.append(f"model.name={args.model}")
    if getattr(args, "data", None):
        overrides.append(f"data.source={args.data}")
    return apply_overrides(config, overrides)
