"""Finding the run folders a notebook looks at: the named run and the runs it is compared with."""

from __future__ import annotations

from pathlib import Path

from seqcomp.runs import Run, finished_runs, load_run, project_root


def resolve_run_dir(run_dir: str | Path, start: Path | None = None) -> Path:
    """``run_dir`` as given if it exists, else relative to the project root (the first folder up from
    ``start``, default the cwd, that holds pyproject.toml): a notebook kernel starts in ``notebooks/``."""
    path = Path(run_dir)
    if path.is_absolute() or path.exists():
        return path
    root = project_root(start)
    if (root / path).exists():
        return root / path
    raise FileNotFoundError(f"run folder '{run_dir}' not found in {Path.cwd()} or the project root {root}")


def comparison_runs(run: Run) -> list[Run]:
    """Finished sibling run folders that answered at least one of ``run``'s test questions (by id)."""
    ids = {p["id"] for p in run.predictions}
    own = run.path.resolve()
    siblings = [f.path for f in finished_runs(own.parent, recursive=False) if f.path.resolve() != own]
    return [r for r in map(load_run, siblings) if ids & {p["id"] for p in r.predictions}]
