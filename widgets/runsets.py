"""Finding the run folders a notebook looks at: the named run and the runs it is compared with."""

from __future__ import annotations

from pathlib import Path

from seqcomp.runs import Run, load_run


def resolve_run_dir(run_dir: str | Path, start: Path | None = None) -> Path:
    """``run_dir`` as given if it exists, else relative to the project root (the first folder up from
    ``start``, default the cwd, that holds pyproject.toml): a notebook kernel starts in ``notebooks/``."""
    path = Path(run_dir)
    if path.is_absolute() or path.exists():
        return path
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / path).exists():
            return folder / path
    raise FileNotFoundError(f"run folder '{run_dir}' not found from {here} or any project root above it")


def comparison_runs(run: Run) -> list[Run]:
    """Finished sibling run folders that answered at least one of ``run``'s test questions (by id)."""
    ids = {p["id"] for p in run.predictions}
    own = run.path.resolve()
    siblings = sorted(p.parent for p in own.parent.glob("*/metrics.json") if p.parent.resolve() != own)
    return [r for r in map(load_run, siblings) if ids & {p["id"] for p in r.predictions}]
