"""Widgets: pure figure/table functions and the ipywidgets views on tiny REAL run folders, plus the notebook."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

import widgets
from seqcomp.runs import load_run

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "inspect_run.ipynb"


@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory, tiny) -> dict[str, Path]:
    """A trained run (with compressed slots and history) and a text baseline on the same 8 test questions."""
    from seqcomp.baselines import run_baseline
    from seqcomp.config import apply_overrides
    from seqcomp.presets import get_preset
    from seqcomp.trainer import train

    root = tmp_path_factory.mktemp("widget-runs") / "demo"
    cfg = apply_overrides(get_preset("tiny"), {"data.n_train": 16, "data.n_test": 8, "data.n_select": 4})
    train(cfg, root / "tiny", lm=tiny, progress=False)
    run_baseline("text", cfg, root / "baseline-text", lm=tiny, progress=False)
    return {"trained": root / "tiny", "baseline": root / "baseline-text"}


@pytest.fixture(scope="session")
def runs(run_dirs):
    return [load_run(run_dirs["trained"]), load_run(run_dirs["baseline"])]


@pytest.fixture()
def mixed_runs(runs):
    """The tiny random model answers nothing right, so mark two of the trained run's answers correct in memory."""
    preds = [dict(p) for p in runs[0].predictions]
    for p in preds[1:3]:
        p.update(prediction=p["golds"][0], em=1.0, f1=1.0)
    return [dataclasses.replace(runs[0], predictions=preds), runs[1]]


# ---- rows: joining, filtering, token colouring -------------------------------------------------------------

def test_join_keeps_first_run_order_and_every_run(runs):
    rows = widgets.join_predictions(runs)
    assert [r["id"] for r in rows] == [p["id"] for p in runs[0].predictions]
    assert set(rows[0]["per_run"]) == {"tiny", "baseline-text"}
    entry = rows[0]["per_run"]["baseline-text"]
    assert set(entry) >= {"prediction", "em", "f1", "first_top5", "tokens", "token_logprobs"}


def test_filters_change_rows(runs, mixed_runs):
    assert len(widgets.filter_predictions(runs)) == 8
    assert widgets.filter_predictions(runs, correct=True) == []
    correct = widgets.filter_predictions(mixed_runs, correct=True)
    assert [r["id"] for r in correct] == [p["id"] for p in mixed_runs[0].predictions[1:3]]
    assert len(widgets.filter_predictions(mixed_runs, correct=False)) == 6
    assert len(widgets.filter_predictions(mixed_runs, f1_range=(0.5, 1.0))) == 2
    title = runs[0].predictions[-1]["title"]
    by_article = widgets.filter_predictions(runs, article=title)
    assert by_article and all(r["title"] == title for r in by_article) and len(by_article) < 8
    gold = runs[0].predictions[0]["golds"][0]
    hits = widgets.filter_predictions(runs, text=gold.upper())
    assert hits and all(gold in (r["context"] + " ".join(r["golds"])).lower() for r in hits)
    assert widgets.filter_predictions(runs, text="no such text anywhere") == []


def test_token_logprob_html_escapes_and_colours():
    out = widgets.token_logprob_html(["<b>", " ok", "\n"], [math.log(0.99), math.log(0.5), math.log(0.01)])
    assert "<b>" not in out and "&lt;b&gt;" in out
    assert out.count('class="tok"') == 3 and "\u21b5" in out
    assert "hsl(119" in out and "hsl(1," in out  # confident green, unlikely red
    with pytest.raises(ValueError, match="log-probs"):
        widgets.token_logprob_html(["a"], [])


def test_first_token_table_marks_gold_starts(runs):
    row = {"first_top5": [[" Paris", 0.6], [" The", 0.2], ["\n", 0.1], [" London", 0.05], ["par", 0.05]],
           "golds": ["Paris", "the city of Paris"]}
    table = widgets.first_token_table(row)
    assert [r["rank"] for r in table] == [1, 2, 3, 4, 5]
    assert [r["gold_prefix"] for r in table] == [True, True, False, False, True]
    real = widgets.first_token_table(runs[0].predictions[0])
    assert len(real) == 5 and real[0]["prob"] >= real[-1]["prob"]


@pytest.mark.parametrize("gold,kind", [("1865", "date"), ("March 3, 1990", "date"), ("the 19th century", "date"),
                                       ("42", "number"), ("three", "number"), ("$5.4 million", "number"),
                                       ("Barack Obama", "person-like"), ("The Beatles", "other"),
                                       ("a red key", "other")])
def test_answer_type(gold, kind):
    assert widgets.answer_type(gold) == kind


# ---- figures --------------------------------------------------------------------------------------------------

def test_training_figure_has_losses_lr_and_eval_points(runs):
    history = runs[0].history
    fig = widgets.training_figure(history)
    names = {t.name: t for t in fig.data}
    assert {"total", "ce", "first_token", "lr", "select F1", "select EM"} <= set(names)
    train_steps = [h["step"] for h in history if h["kind"] == "train"]
    eval_rows = [h for h in history if h["kind"] == "eval"]
    assert list(names["total"].x) == train_steps
    assert list(names["select F1"].y) == [h["select_f1"] for h in eval_rows]
    assert names["lr"].yaxis == "y2" and names["select F1"].yaxis == "y3"
    assert [a.text for a in fig.layout.annotations][:3] == ["Loss terms (train batches)", "Learning rate",
                                                             "Selection slice (%)"]


def test_collapse_over_training_figure(runs):
    evals = [h for h in runs[0].history if h["kind"] == "eval"]
    fig = widgets.collapse_over_training_figure(runs[0].history)
    names = {t.name: t for t in fig.data}
    assert set(names) == {"cross-input cosine", "within-sequence cosine", "effective rank", "RMS ratio"}
    assert list(names["cross-input cosine"].y) == [h["diag_cross_input_cosine"] for h in evals]


def test_metrics_table_and_figure(runs):
    table = widgets.metrics_table(runs)
    assert [r["run"] for r in table] == ["tiny", "baseline-text"]
    assert table[0]["f1"] == runs[0].metrics["f1"]
    fig = widgets.metrics_figure(runs)
    assert [t.name for t in fig.data] == ["EM", "F1"]
    assert all(len(t.x) == 2 and min(t.error_y.array) >= 0 and min(t.error_y.arrayminus) >= 0 for t in fig.data)
    assert "<table" in widgets.table_html(table)


def test_compressed_slots_and_embedding_map(runs):
    slots, ids, emb_rms = widgets.load_compressed(runs[0].path)
    n, m, d = slots.shape
    assert n == len(ids) == 8 and d == 64 and emb_rms > 0
    labels = ["a", "b"] * 4
    per_seq = widgets.embedding_2d_figure(slots, labels)
    assert sum(len(t.x) for t in per_seq.data) == n and [t.name for t in per_seq.data] == ["a", "b"]
    assert "mean-pooled" in per_seq.layout.title.text and per_seq.layout.xaxis.title.text.startswith("PC1")
    per_slot = widgets.embedding_2d_figure(slots, labels, level="slot")
    assert sum(len(t.x) for t in per_slot.data) == n * m and "individual slots" in per_slot.layout.title.text
    with pytest.raises(ValueError, match="labels"):
        widgets.embedding_2d_figure(slots, labels[:3])
    with pytest.raises(ValueError, match="pca"):
        widgets.embedding_2d_figure(slots, labels, method="tsne")


def test_nearest_tokens_finds_an_exact_token(tiny):
    table = tiny.embed.weight.detach()
    slots = torch.stack([table[[10, 20, 30]], table[[40, 50, 60]]])  # [2, 3, D]
    near = widgets.nearest_tokens(slots, table, tiny.tokenizer, k=4)
    assert len(near) == 2 and len(near[0]) == 3 and len(near[0][0]) == 4
    token, cos = near[1][2][0]
    assert token == tiny.tokenizer.decode([60]) and cos == pytest.approx(1.0, abs=1e-5)
    assert all(a[1] >= b[1] for a, b in zip(near[0][0], near[0][0][1:]))


def test_cosine_heatmaps_and_rms_histogram(runs, tiny):
    slots, _, _ = widgets.load_compressed(runs[0].path)
    n, m, _ = slots.shape
    slot_map = widgets.slot_cosine_heatmap(slots, 2)
    z = slot_map.data[0].z
    assert len(z) == m and len(z[0]) == m and all(z[i][i] == pytest.approx(1.0, abs=1e-5) for i in range(m))
    cross = widgets.cross_input_cosine_heatmap(slots)
    assert len(cross.data[0].z) == n and "Cross-input" in cross.layout.title.text
    with pytest.raises(IndexError):
        widgets.slot_cosine_heatmap(slots, n)
    hist = widgets.rms_histogram(slots, tiny.embed.weight)
    assert [len(t.x) for t in hist.data] == [tiny.embed.weight.shape[0], n * m]
    assert hist.layout.barmode == "overlay"


# ---- views driven programmatically ------------------------------------------------------------------------

def test_inspector_filters_drive_rows_and_display(mixed_runs):
    insp = widgets.GenerationInspector(mixed_runs)
    assert len(insp.rows) == 8 and insp.display.value.count("seqcomp-pred") == 2
    insp.correct.value = "correct"
    assert len(insp.rows) == 2 and "correct</span>" in insp.display.value
    insp.correct.value = "wrong"
    assert len(insp.rows) == 6 and "&#10008; wrong" in insp.display.value
    assert insp.question.value == insp.rows[0]["id"]
    insp.question.value = insp.rows[3]["id"]
    assert insp.rows[3]["id"] in insp.display.value
    insp.correct.value = "all"
    insp.f1_range.value = (0.5, 1.0)
    assert len(insp.rows) == 2
    insp.f1_range.value = (0.0, 1.0)
    insp.article.value = insp.article.options[-1]
    assert insp.rows and all(r["title"] == insp.article.value for r in insp.rows)
    insp.search.value = "no such text anywhere"
    assert insp.rows == [] and "No questions match" in insp.display.value
    assert "application/vnd.jupyter.widget-view+json" in insp._repr_mimebundle_()
    assert len(widgets.GenerationInspector(mixed_runs, max_rows=3).rows) == 3


def test_embedding_explorer_updates_on_choices(runs, tiny):
    exp = widgets.EmbeddingExplorer(runs[0], tiny.embed.weight, tiny.tokenizer, k=3)
    assert isinstance(exp.scatter, go.FigureWidget)
    assert {t.name for t in exp.scatter.data} == {p["title"] for p in runs[0].predictions}
    exp.colour_by.value = "correct"
    assert [t.name for t in exp.scatter.data] == ["wrong"]
    exp.level.value = "slot"
    assert sum(len(t.x) for t in exp.scatter.data) == exp.slots.shape[0] * exp.slots.shape[1]
    before = exp.nearest.value
    exp.sequence.value = 5
    assert "sequence 5" in exp.slot_heatmap.layout.title.text and exp.nearest.value != before
    assert set(exp.figures()) == {"pca", "cross_input_cosine", "rms", "slot_cosine"}


def test_dashboard_refresh_rereads_history(run_dirs, tmp_path):
    run = tmp_path / "live"
    shutil.copytree(run_dirs["trained"], run)
    dash = widgets.TrainingDashboard(run)
    n = len(dash.history)
    assert n > 0 and isinstance(dash.training, go.FigureWidget) and "finished" in dash.status.value
    with open(run / "history.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 99, "kind": "train", "lr": 0.0, "loss_total": 1.0, "loss_ce": 1.0}) + "\n")
    assert dash.refresh() == n + 1
    total = next(t for t in dash.training.data if t.name == "total")
    assert total.x[-1] == 99
    static = dash.static_figure()
    assert type(static) is go.Figure and next(t for t in static.data if t.name == "total").x[-1] == 99
    dash.watch(0.05)
    dash.stop()


def test_run_helpers(run_dirs, monkeypatch):
    run = load_run(run_dirs["trained"])
    assert [r.name for r in widgets.comparison_runs(run)] == ["baseline-text"]
    monkeypatch.chdir(run_dirs["trained"].parents[1])
    assert widgets.resolve_run_dir("demo/tiny") == Path("demo/tiny")
    with pytest.raises(FileNotFoundError):
        widgets.resolve_run_dir("demo/missing")


# ---- the notebook -------------------------------------------------------------------------------------------

def test_notebook_is_committed_clean_with_literal_parameters():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    assert params[0].source.splitlines() == ['run_dir = "runs/demo/tier1"', 'model = "smollm2-135m-instruct"',
                                             "max_rows = 20"]


def test_notebook_runs_with_papermill(run_dirs, tmp_path):
    import nbformat
    import papermill

    out = tmp_path / "inspect_run.out.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters={"run_dir": str(run_dirs["trained"]),
                               "model": "tiny", "max_rows": 5}, cwd=str(NOTEBOOK.parent), progress_bar=False,
                               kernel_name="python3")
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    plotly_outputs = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plotly_outputs) == 7  # metrics, training + collapse, PCA + cross cosine + RMS + slot cosine
    assert all("text/html" in o.data for o in plotly_outputs)  # readable in exported HTML without a kernel
    widget_views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widget_views) == 3
