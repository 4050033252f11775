"""Budget curves: rows from reference run folders, one line per system, BOS variants kept apart."""

from __future__ import annotations

import json

import widgets
from seqcomp.experiments import budget_rows


def _run(folder, name, n_train, f1, bos=True):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": name, "kind": "trained",
                                                    "experiment": {"layout": {"bos": bos}}}))
    (folder / "metrics.json").write_text(json.dumps({"n": 10, "n_train": n_train, "f1": f1, "f1_ci": [f1 - 5, f1 + 5],
                                                     "exact_match": f1 / 2, "exact_match_ci": [0, f1]}))


def test_budget_rows_and_figure(tmp_path):
    _run(tmp_path / "text-200", "text-ceiling", 200, 15.0)
    _run(tmp_path / "text-2000", "text-ceiling", 2000, 45.0)
    _run(tmp_path / "text-2000-nobos", "text-ceiling", 2000, 47.0, bos=False)
    _run(tmp_path / "truncate-200", "truncate-trained", 200, 10.0)
    (tmp_path / "zs-text").mkdir()
    (tmp_path / "zs-text" / "config.json").write_text(json.dumps({"name": "baseline-text", "kind": "baseline"}))
    (tmp_path / "zs-text" / "metrics.json").write_text(json.dumps({"n": 10, "f1": 12.0}))
    rows = budget_rows(tmp_path)
    assert {(r["system"], r["n_train"]) for r in rows} == {
        ("text-ceiling", 200), ("text-ceiling", 2000), ("text-ceiling (no BOS)", 2000), ("truncate-trained", 200)}
    fig = widgets.budget_figure(rows)
    lines = {t.name: (list(t.x), list(t.y)) for t in fig.data}
    assert lines["text-ceiling"] == ([200, 2000], [15.0, 45.0])
    assert lines["text-ceiling (no BOS)"] == ([2000], [47.0])
    assert list(fig.data[0].error_y.array) == [5.0, 5.0]
