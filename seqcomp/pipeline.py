"""Notebooks as batch jobs: papermill execution with checked parameters, offline HTML, the 01 -> 02 -> 03 pipeline
that ``make demo`` runs (``seqcomp pipeline``), its summary, and parameter sweeps (``seqcomp sweep``)."""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

from .metrics import results_table
from .runs import atomic_write_text, finished_runs, safe_relative_path, write_json

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
PIPELINE = ("01_diagnosis.ipynb", "02_tier1_fixes.ipynb", "03_retraining.ipynb")
COMPLETE = "_complete.json"  # written last into a sweep point: its presence means the point is done
PAPERMILL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


class NotebookParameterError(ValueError):
    """A parameter or grid the notebook cannot take; raised before anything executes."""


class NotebookFailed(RuntimeError):
    """A cell raised; the message is one line naming the notebook, the cell and the error."""


def parse_value(text: str) -> Any:
    """A ``-p`` value the way papermill's CLI reads it: None, true/false, int, float, a JSON list
    (``-p ms "[8, 16]"``), else the string."""
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise NotebookParameterError(f"{text!r} starts like a list but is not JSON ({err.msg}); "
                                         "write lists as [8, 16] or [\"a\", \"b\"]") from None
    if text in ("None", "none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def resolve_notebook(name: str | Path) -> Path:
    """A notebook path, or a name in ``notebooks/`` with or without ``.ipynb``."""
    for path in (Path(name), NOTEBOOK_DIR / name, NOTEBOOK_DIR / f"{name}.ipynb"):
        if path.is_file() and path.suffix == ".ipynb":
            return path
    known = ", ".join(p.stem for p in sorted(NOTEBOOK_DIR.glob("*.ipynb")))
    raise FileNotFoundError(f"notebook '{name}' not found; give a path or one of: {known}")


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """Names and defaults of the notebook's one ``parameters`` cell, which may only assign literals."""
    import ast

    import nbformat

    cells = [c for c in nbformat.read(notebook, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise NotebookParameterError(f"{notebook} needs exactly one cell tagged 'parameters', found {len(cells)}")
    params = {}
    for stmt in ast.parse(cells[0].source).body:
        names = getattr(stmt, "targets", [])
        if len(names) != 1 or not isinstance(names[0], ast.Name):
            raise NotebookParameterError(f"{notebook}: parameters line {stmt.lineno} is not 'name = literal'")
        try:
            params[names[0].id] = ast.literal_eval(stmt.value)
        except ValueError as err:
            raise NotebookParameterError(f"{notebook}: parameter '{names[0].id}' is not a literal") from err
    return params


def check_parameters(notebook: Path, names: Sequence[str]) -> dict[str, Any]:
    """The notebook's parameters, after checking that every given name is one (papermill only warns)."""
    declared = notebook_parameters(notebook)
    unknown = sorted(set(names) - set(declared))
    if unknown:
        raise NotebookParameterError(f"{Path(notebook).name} has no parameter(s) {', '.join(unknown)}; "
                                     f"its parameters are: {', '.join(declared)}")
    return declared


def execute(notebook: Path, out_dir: Path, parameters: dict[str, Any], no_input: bool = False,
            log_output: bool = True) -> dict:
    """Execute ``notebook`` with papermill into ``out_dir`` (also its ``out_dir`` parameter unless given, so run
    folders land beside it) and render HTML. A failing cell raises ``NotebookFailed``; the partial notebook stays."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebook, out_dir = Path(notebook), Path(out_dir).resolve()
    if "out_dir" in parameters:  # a string parameter must not write outside the runs directory
        safe_relative_path(str(parameters["out_dir"]), "out_dir")
    params = dict(parameters)
    if "out_dir" in check_parameters(notebook, list(parameters)):
        params.setdefault("out_dir", str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / notebook.name
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(notebook), str(executed), parameters=params, progress_bar=False,
                                   log_output=log_output)
    except PapermillExecutionError as err:
        raise NotebookFailed(_failure_message(notebook, executed, err)) from None
    html = render_html(executed, no_input)
    return {"notebook": notebook.name, "executed": str(executed), "html": str(html),
            "seconds": round(time.perf_counter() - start, 1)}


def _failure_message(notebook: Path, executed: Path, err) -> str:
    """One line: notebook, cell index as in the source notebook (papermill's own cells skipped), error."""
    import nbformat

    cells = [c for c in nbformat.read(executed, as_version=4).cells
             if not PAPERMILL_TAGS & set(c.metadata.get("tags", []))]
    index = next(i for i, c in enumerate(cells) if any(o.get("output_type") == "error" for o in c.get("outputs", [])))
    first_line = next((line for line in err.source.splitlines() if line.strip()), "")
    evalue = (str(err.evalue).splitlines() or [""])[0]
    return (f"{notebook.name} failed at cell {index} (In [{err.exec_count}]: {first_line.strip()!r}): "
            f"{err.ename}: {evalue} (partial notebook kept at {executed})")


def render_html(executed: Path, no_input: bool = False) -> Path:
    """HTML beside the executed notebook; the notebooks embed plotly.js once, so it works offline."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=no_input, exclude_input_prompt=no_input,
                            exclude_output_prompt=no_input)
    body, _ = exporter.from_filename(str(executed))
    html = Path(executed).with_suffix(".html")
    atomic_write_text(html, body)
    return html


def collect_metrics(root: Path) -> list[dict]:
    """One row per finished run folder under ``root`` (config.json + metrics.json), labelled by its path."""
    rows = []
    for run in finished_runs(root):
        if run.started:
            m = run.read_metrics()
            rows.append({**m, "system": run.path.relative_to(root).as_posix(), "name": m["system"],
                         "seconds": m.get("seconds", m.get("train_seconds"))})
    return rows


# Training questions below which the trained reference paths are still climbing steeply on SmolLM2-135M (budget
# curves in docs/results.md): comparisons below it mostly measure noise; and test questions below which CIs are wide.
FAIR_TRAIN_BUDGET = 2000
FAIR_TEST_QUESTIONS = 1000


def budget_note(n_train: int, n_eval: int) -> str:
    """What a reader of a summary must know before comparing its rows."""
    notes = []
    if n_train < FAIR_TRAIN_BUDGET:
        notes.append(f"**Training budget {n_train} questions per system is below {FAIR_TRAIN_BUDGET:,}**, where the trained "
                     "reference paths are still far from their plateau (docs/results.md, budget curves): differences "
                     "of a few F1 between systems here are not results.")
    if n_eval < FAIR_TEST_QUESTIONS:
        notes.append(f"**{n_eval} test questions**: 95% CIs are about +-{_ci_half_width(n_eval):.0f} F1 wide at this n; "
                     f"claim a difference only at >= {FAIR_TEST_QUESTIONS:,} questions with CIs apart.")
    return "\n".join(notes) or (f"Budget: {n_train:,} training and {n_eval:,} test questions per system (at or above "
                                 "the budget the reference paths need; docs/results.md).")


def _ci_half_width(n: int) -> float:
    """A typical 95% CI half-width of SQuAD F1 here: ~4.5 F1 at n = 100, measured; shrinks as 1/sqrt(n)."""
    return 4.5 * (100 / n) ** 0.5


def run_pipeline(out: Path, parameters: dict[str, Any], no_input: bool = False) -> dict:
    """01 -> 02 -> 03 with shared parameters and ``out_dir=out``; writes ``summary.md`` and ``summary.json``."""
    out = Path(out).resolve()
    if "out_dir" in parameters:
        raise NotebookParameterError("the pipeline writes to --out; do not pass -p out_dir")
    paths = [NOTEBOOK_DIR / name for name in PIPELINE]
    for path in paths:  # every name checked before the first notebook starts
        check_parameters(path, list(parameters))
    start, timings = time.perf_counter(), []
    for i, path in enumerate(paths, 1):
        print(f"[pipeline {i}/{len(paths)}] {path.name} -> {out / path.name}", flush=True)
        timings.append(execute(path, out, parameters, no_input))
    summary = {"parameters": parameters, "notebooks": timings, "total_seconds": round(time.perf_counter() - start, 1),
               "runs": collect_metrics(out)}
    effective = {**notebook_parameters(paths[0]), **parameters}
    summary["budget_note"] = budget_note(int(effective["n_train"]), int(effective["n_eval"]))
    write_json(out / "summary.json", summary)
    times = "\n".join(f"| {t['notebook']} | {t['seconds']} | {Path(t['html']).name} |" for t in timings)
    atomic_write_text(out / "summary.md", (
        f"# seqcomp pipeline\n\nparameters: `{json.dumps(parameters)}`\n\n{summary['budget_note']}\n\n"
        f"{results_table(summary['runs'])}\n\n"
        f"| notebook | seconds | HTML |\n|---|---|---|\n{times}\n\ntotal: {summary['total_seconds']} s\n"))
    return summary


def load_grid(path: Path) -> dict[str, list]:
    """A YAML mapping of parameter name -> list of values."""
    import yaml

    grid = yaml.safe_load(Path(path).read_text())
    if not isinstance(grid, dict) or not grid:
        raise NotebookParameterError(f"{path}: a grid is a YAML mapping of parameter name -> list of values")
    bad = [k for k, v in grid.items() if not isinstance(v, list) or not v]
    if bad:
        raise NotebookParameterError(f"{path}: {', '.join(bad)} must be non-empty lists, e.g. m: [8, 16, 32]")
    return grid


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """The cartesian product of the grid, in the order the grid lists names and values."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def point_name(point: dict[str, Any]) -> str:
    """A folder name from a point's parameters, safe characters only: ``m=8__n_train=200``."""
    return "__".join(f"{k}={re.sub(r'[^A-Za-z0-9._-]+', '-', str(v))}" for k, v in point.items())


def run_sweep(target: str, grid: dict[str, list], out: Path, parameters: dict[str, Any] | None = None,
              no_input: bool = False) -> dict:
    """Run ``target`` (a notebook, or ``pipeline``) once per grid point into ``out/<point>/``, skipping
    points whose ``_complete.json`` marker exists; writes ``sweep.md`` and ``sweep.json``."""
    out, parameters = Path(out).resolve(), dict(parameters or {})
    notebooks = [NOTEBOOK_DIR / n for n in PIPELINE] if target == "pipeline" else [resolve_notebook(target)]
    twice = sorted(set(grid) & {*parameters, "out_dir"})
    if twice:
        raise NotebookParameterError(f"{', '.join(twice)} set by the grid and by -p (or --out); set each name once")
    for path in notebooks:
        check_parameters(path, [*grid, *parameters])
    points = grid_points(grid)
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise NotebookParameterError("two grid points map to the same folder name; use distinct values")
    done, rows = [], []
    for i, (point, name) in enumerate(zip(points, names), 1):
        folder, params = out / name, {**parameters, **point}
        skip = _complete(folder, params)
        print(f"[sweep {i}/{len(points)}] {name}" + (": complete, skipped" if skip else ""), flush=True)
        if not skip:
            start = time.perf_counter()
            if target == "pipeline":
                run_pipeline(folder, params, no_input)
            else:
                execute(notebooks[0], folder, params, no_input)
            write_json(folder / COMPLETE, {"parameters": params, "seconds": round(time.perf_counter() - start, 1),
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        seconds = json.loads((folder / COMPLETE).read_text())["seconds"]
        done.append({"point": name, "parameters": params, "skipped": skip, "seconds": seconds})
        rows += [{**row, "system": f"{name}/{row['system']}", "point": point} for row in collect_metrics(folder)]
    sweep = {"target": target, "grid": grid, "parameters": parameters, "points": done, "runs": rows}
    write_json(out / "sweep.json", sweep)
    atomic_write_text(out / "sweep.md", f"# seqcomp sweep: {target}\n\ngrid: `{json.dumps(grid)}`\n\n"
                      f"{results_table(rows)}\n")
    return sweep


def _complete(folder: Path, params: dict[str, Any]) -> bool:
    """A point is complete when its marker exists; a marker from other parameters is an error, not a skip."""
    marker = folder / COMPLETE
    if not marker.is_file():
        return False
    finished = json.loads(marker.read_text())["parameters"]
    if finished != json.loads(json.dumps(params)):
        raise NotebookParameterError(f"{folder} holds a finished point with other parameters {finished}; "
                                     "use another --out")
    return True
