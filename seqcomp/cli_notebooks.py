"""CLI commands that execute notebooks (registered by ``seqcomp.cli``): run, pipeline, sweep.

A failing cell exits 1 with one line naming the notebook and the cell; a parameter the notebook does not
declare exits 2 before anything runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _parameters(args: argparse.Namespace) -> dict:
    from .pipeline import parse_value

    return {name: parse_value(value) for name, value in args.parameters}


def _show_progress() -> None:
    """papermill's ``--log-output``: "Executing Cell N" and each cell's printed output as it arrives."""
    logger = logging.getLogger("papermill")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _guarded(args: argparse.Namespace, action) -> int:
    from .pipeline import NotebookFailed, NotebookParameterError
    from .runs import RunFolderError

    _show_progress()
    try:
        action()
    except (NotebookParameterError, RunFolderError) as err:
        print(f"seqcomp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except NotebookFailed as err:
        print(f"seqcomp {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import execute, resolve_notebook

    notebook = resolve_notebook(args.notebook)
    result: dict = {}
    code = _guarded(args, lambda: result.update(execute(notebook, Path(args.out), _parameters(args), args.no_input)))
    if code == 0:
        print(f"{result['executed']}\n{result['html']}")
    return code


def cmd_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    code = _guarded(args, lambda: run_pipeline(Path(args.out), _parameters(args), args.no_input))
    if code == 0:
        print(f"pipeline written to {args.out} (summary.md, summary.json, one .ipynb and .html per notebook)")
    return code


def cmd_sweep(args: argparse.Namespace) -> int:
    from .pipeline import load_grid, run_sweep

    code = _guarded(args, lambda: run_sweep(args.notebook, load_grid(Path(args.grid)), Path(args.out),
                                            _parameters(args), args.no_input))
    if code == 0:
        print(f"sweep written to {args.out} (sweep.md, sweep.json, one folder per point)")
    return code


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--parameter", dest="parameters", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="a notebook parameter (numbers, None, true/false, else a string)")
    p.add_argument("--no-input", action="store_true", help="hide the code cells in the HTML")


def register_run(sub) -> None:
    p = sub.add_parser("run", help="execute a notebook with papermill into a folder and render its HTML")
    p.add_argument("notebook", help="a .ipynb path or a name from notebooks/ (e.g. 01_diagnosis)")
    p.add_argument("--out", required=True, help="folder for the executed notebook, its HTML and run folders")
    _add_common(p)
    p.set_defaults(func=cmd_run)


def register_pipeline(sub) -> None:
    p = sub.add_parser("pipeline", help="run notebooks 01 -> 02 -> 03 into one folder with a summary")
    p.add_argument("--out", required=True, help="the notebooks' out_dir; gets summary.md and summary.json")
    _add_common(p)
    p.set_defaults(func=cmd_pipeline)


def register_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run a notebook (or 'pipeline') over a parameter grid, one folder per point")
    p.add_argument("notebook", help="a .ipynb path, a name from notebooks/, or 'pipeline'")
    p.add_argument("--grid", required=True, help="YAML mapping: parameter name -> list of values")
    p.add_argument("--out", required=True, help="folder with one sub-folder per point, sweep.md and sweep.json")
    _add_common(p)
    p.set_defaults(func=cmd_sweep)


REGISTER = [register_run, register_pipeline, register_sweep]
