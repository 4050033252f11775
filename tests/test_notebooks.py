"""The pipeline notebooks and their runner: executed with papermill on the tiny model, checked by the files they write.

One tiny pipeline run (01 -> 02 -> 03 through ``seqcomp pipeline``) is shared by the per-notebook checks here and
by the browser check in ``test_notebook_html.py``.
"""

from __future__ import annotations

import ast
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from seqcomp import cli
from seqcomp import experiments, pipeline as nbrun
from seqcomp.baselines import KINDS
from seqcomp.config import apply_overrides, from_dict

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
TINY = {"model": "tiny", "data": "synthetic:key-recall", "n_train": 16, "n_eval": 8, "n_select": 4, "m": 4,
        "epochs": 1}
STAGES = ("0_diagnosed", "1_generation_length", "2_anchor", "3_bos", "4_tier1")
TRAINED_03 = ("tier2", "best", "text-ceiling", "truncate-trained", "select-trained", "encoder")
FIGURES = {"01_diagnosis": 2, "02_tier1_fixes": 1, "03_retraining": 12}  # plotly figures each notebook shows
_PIPELINE: dict[str, Path] = {}


def tiny_args(params: dict = TINY) -> list[str]:
    return [x for name, value in params.items() for x in ("-p", name, str(value))]


def tiny_pipeline(tmp_path_factory) -> Path:
    """``seqcomp pipeline`` on the tiny model, run once per session (also used by the browser check)."""
    if "out" not in _PIPELINE:
        out = tmp_path_factory.mktemp("pipeline") / "demo"
        assert cli.main(["pipeline", "--out", str(out), *tiny_args()]) == 0
        _PIPELINE["out"] = out
    return _PIPELINE["out"]


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory) -> Path:
    return tiny_pipeline(tmp_path_factory)


def read_json(path: Path):
    return json.loads(path.read_text())


def cell_outputs(path: Path) -> list[dict]:
    return [o for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" for o in c.outputs]


def plotly_outputs(path: Path) -> list[dict]:
    return [o for o in cell_outputs(path) if "application/vnd.plotly.v1+json" in o.get("data", {})]


def test_pipeline_writes_summary_html_and_every_run(pipeline_dir):
    summary = read_json(pipeline_dir / "summary.json")
    assert summary["parameters"] == TINY
    assert [t["notebook"] for t in summary["notebooks"]] == list(nbrun.PIPELINE)
    assert all(t["seconds"] > 0 for t in summary["notebooks"]) and summary["total_seconds"] > 0
    expected = ({f"01_diagnosis/baseline-{k}" for k in KINDS} | {f"02_tier1_fixes/{s}" for s in STAGES}
                | {f"03_retraining/{p}" for p in TRAINED_03})
    assert {r["system"] for r in summary["runs"]} == expected
    assert all(r["n"] == TINY["n_eval"] and len(r["f1_ci"]) == 2 for r in summary["runs"])
    table = (pipeline_dir / "summary.md").read_text()
    assert all(f"| {name} | 8 |" in table for name in expected)
    assert "| 03_retraining.ipynb |" in table
    assert f"Training budget {TINY['n_train']} questions per system is below 2,000" in table  # no noise read as result
    assert summary["budget_note"] in table and "8 test questions" in table
    for stem, n_figures in FIGURES.items():
        assert not [o for o in cell_outputs(pipeline_dir / f"{stem}.ipynb") if o["output_type"] == "error"]
        assert len(plotly_outputs(pipeline_dir / f"{stem}.ipynb")) == n_figures, stem
        html = (pipeline_dir / f"{stem}.html").read_text()
        assert html.count("* plotly.js v") == 1, f"{stem}.html must embed plotly.js exactly once (offline)"
        assert html.count("Plotly.newPlot") >= n_figures and 'src="https://cdn.plot.ly' not in html


def test_01_writes_diagnosis_doctor_and_baselines(pipeline_dir):
    root = pipeline_dir / "01_diagnosis"
    diagnosis = read_json(root / "diagnosis.json")
    assert diagnosis["model"] == "tiny" and set(diagnosis["percent_over"]) >= {"12", "32"}
    assert diagnosis["recommended_max_new_tokens"] == diagnosis["answer_tokens"]["max"] + 1  # 1-token answers
    failed = {c["name"] for c in read_json(root / "doctor-seed-experiment-1.json") if not c["passed"]}
    assert failed >= {"answer anchor", "end-of-answer token trained", "selection slice disjoint from test slice"}
    for kind in KINDS:
        run = root / f"baseline-{kind}"
        assert read_json(run / "metrics.json")["n"] == 8
        assert len((run / "predictions.jsonl").read_text().splitlines()) == 8
        config = read_json(run / "config.json")
        assert config["experiment"]["generation"]["max_new_tokens"] == diagnosis["recommended_max_new_tokens"]
    assert read_json(root / "baseline-truncate" / "config.json")["budget"] == TINY["m"]


def test_02_applies_the_fixes_one_at_a_time(pipeline_dir):
    root = pipeline_dir / "02_tier1_fixes"
    rec = read_json(pipeline_dir / "01_diagnosis" / "diagnosis.json")["recommended_max_new_tokens"]
    configs = {s: read_json(root / s / "config.json")["experiment"] for s in STAGES}
    generation = [configs[s]["generation"]["max_new_tokens"] for s in STAGES]
    assert generation == [12, rec, rec, rec, rec]
    assert [configs[s]["layout"]["anchor"] for s in STAGES] == ["", "", "Answer:", "Answer:", "Answer:"]
    assert [configs[s]["layout"]["bos"] for s in STAGES] == [False, False, False, True, True]
    assert all(configs[s]["data"]["max_answer_tokens"] < rec for s in STAGES[1:])
    ids = {s: [json.loads(line)["id"] for line in (root / s / "predictions.jsonl").read_text().splitlines()]
           for s in STAGES}
    assert all(ids[s] == ids["0_diagnosed"] for s in STAGES)  # the same evaluation questions
    doctor = {s: [c["passed"] for c in read_json(root / s / "doctor.json")] for s in STAGES}
    assert not all(doctor["0_diagnosed"]) and all(doctor["4_tier1"])
    assert [r["stage"] for r in read_json(root / "ablation.json")] == list(STAGES)
    for stage in STAGES:
        assert (root / stage / "metrics.json").is_file() and (root / stage / "history.jsonl").is_file()


def test_03_trains_the_fair_systems_and_compares_every_baseline(pipeline_dir):
    root = pipeline_dir / "03_retraining"
    for preset in TRAINED_03:
        assert read_json(root / preset / "metrics.json")["system"] == f"trained:{preset}"
        assert read_json(root / preset / "config.json")["experiment"]["name"] == preset
        assert any(h["kind"] == "train" for h in map(json.loads, (root / preset / "history.jsonl").open()))
    assert not (root / "tier1").exists()  # reused from 02 after checking its config, not retrained
    tier1 = from_dict(read_json(pipeline_dir / "02_tier1_fixes" / "4_tier1" / "config.json")["experiment"])
    with pytest.raises(ValueError, match="compressor.m"):
        experiments.load_matching_run(pipeline_dir / "02_tier1_fixes" / "4_tier1",
                                apply_overrides(tier1, {"compressor.m": 5}), "02_tier1_fixes.ipynb")
    compared = [r["run"] for r in read_json(root / "comparison.json")]
    assert compared == [f"baseline-{k}" for k in KINDS] + ["tier1", *TRAINED_03]


class _TableParser(HTMLParser):
    """The cells of every <table> in an HTML fragment, as text, row by row."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def shown_tables(path: Path, column: str) -> list[list[dict]]:
    """Every HTML table the executed notebook displays that has ``column``, as one dict per row (header -> text)."""
    parser = _TableParser()
    for o in cell_outputs(path):
        parser.feed(o.get("data", {}).get("text/html", ""))
    return [[dict(zip(t[0], row, strict=True)) for row in t[1:]] for t in parser.tables if column in t[0]]


def printed(path: Path) -> str:
    return "".join(o["text"] for o in cell_outputs(path) if o["output_type"] == "stream")


def as_shown(text: str, value: float) -> str:
    """``value`` formatted with as many decimals as the notebook showed in ``text``."""
    return f"{value:.{len(text.partition('.')[2])}f}"


def assert_row_shows(row: dict, metrics: dict, where: str) -> None:
    """One metrics-table row (widgets.metrics_table through table_html) against the metrics.json it was read from."""
    assert row["system"] == metrics["system"] and row["n"] == str(metrics["n"]), where
    for key in ("exact_match", "f1"):
        assert row[key] == as_shown(row[key], metrics[key]), f"{where}: {key} {row[key]} vs {metrics[key]}"
        lo, hi = row[f"{key}_ci"].strip("[]").split(", ")
        assert [lo, hi] == [as_shown(lo, metrics[f"{key}_ci"][0]), as_shown(hi, metrics[f"{key}_ci"][1])], where
    fta, tokens = row["first_token_accuracy"], row["mean_pred_tokens"]
    assert fta == as_shown(fta, 100 * metrics["first_token_accuracy"]), f"{where}: first-token accuracy {fta}"
    assert tokens == as_shown(tokens, metrics["mean_pred_tokens"]), f"{where}: mean_pred_tokens {tokens}"


# The numbers the notebooks show must be those of the run folders they read. At the tiny settings every EM/F1 is 0,
# so the system name, the mean answer length and the baselines' seconds are what tell a wrong folder apart.

def test_02_shows_the_metrics_of_its_stage_folders(pipeline_dir):
    metrics = {s: read_json(pipeline_dir / "02_tier1_fixes" / s / "metrics.json") for s in STAGES}
    [table] = shown_tables(pipeline_dir / "02_tier1_fixes.ipynb", "exact_match")
    assert [row["stage"] for row in table] == list(STAGES)
    for row in table:
        assert_row_shows(row, metrics[row["stage"]], f"02 table, {row['stage']}")
    lines = re.findall(r"(\S+): training .+ \.\.\.\n +EM (\S+) +F1 (\S+) ",
                       printed(pipeline_dir / "02_tier1_fixes.ipynb"))
    assert [stage for stage, _, _ in lines] == list(STAGES)
    for stage, em, f1 in lines:
        assert (em, f1) == (as_shown(em, metrics[stage]["exact_match"]), as_shown(f1, metrics[stage]["f1"])), stage


def test_03_shows_the_metrics_of_the_folders_it_compares(pipeline_dir):
    read = ([pipeline_dir / "01_diagnosis" / f"baseline-{k}" for k in KINDS]
            + [pipeline_dir / "02_tier1_fixes" / "4_tier1"] + [pipeline_dir / "03_retraining" / p for p in TRAINED_03])
    [table] = shown_tables(pipeline_dir / "03_retraining.ipynb", "exact_match")
    assert len(table) == len(read)
    for row, folder in zip(table, read):
        assert_row_shows(row, read_json(folder / "metrics.json"), f"03 table, {folder.name}")
    lines = re.findall(r"training (\S+) \.\.\.\n +EM (\S+) +F1 (\S+) ", printed(pipeline_dir / "03_retraining.ipynb"))
    assert [preset for preset, _, _ in lines] == list(TRAINED_03)
    for preset, em, f1 in lines:
        m = read_json(pipeline_dir / "03_retraining" / preset / "metrics.json")
        assert (em, f1) == (as_shown(em, m["exact_match"]), as_shown(f1, m["f1"])), preset


def test_01_shows_the_metrics_its_baselines_wrote(pipeline_dir):
    shown = [o["data"]["text/markdown"] for o in cell_outputs(pipeline_dir / "01_diagnosis.ipynb")
             if "text/markdown" in o.get("data", {})]
    rows = [line.strip("| ").split(" | ") for md in shown for line in md.splitlines() if line.startswith("| baseline:")]
    assert [r[0] for r in rows] == [f"baseline:{k}" for k in KINDS]
    for system, n, em, f1, fta, tokens, seconds in rows:
        m = read_json(pipeline_dir / "01_diagnosis" / f"baseline-{system.split(':')[1]}" / "metrics.json")
        for cell, key in ((em, "exact_match"), (f1, "f1")):  # "value [lo, hi]"
            value, lo, hi = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", cell).groups()
            ci = [as_shown(t, v) for t, v in zip((lo, hi), m[f"{key}_ci"], strict=True)]
            assert [value, lo, hi] == [as_shown(value, m[key]), *ci], f"{system}: {key} {cell}"
        assert n == str(m["n"]) and fta == as_shown(fta[:-1], 100 * m["first_token_accuracy"]) + "%", system
        assert tokens == as_shown(tokens, m["mean_pred_tokens"]), f"{system}: mean pred tokens {tokens}"
        assert seconds == str(m["seconds"]), f"{system}: seconds {seconds} vs {m['seconds']}"


def test_04_trains_every_lever_at_each_m_and_plots_f1_against_ratio(tmp_path):
    from seqcomp.presets import ABLATIONS, ENCODER_ABLATIONS

    encoders = [v for v in ENCODER_ABLATIONS if v != "encoder, 6 layers"]  # the tiny model has 2 layers
    params = {**{k: v for k, v in TINY.items() if k != "m"}, "ms": [2, 4], "encoder_variants": encoders}
    nbrun.execute(NOTEBOOKS / "04_ablations.ipynb", tmp_path, params, log_output=False)
    out = tmp_path / "04_ablations"
    rows = read_json(out / "comparison.json")
    expected = {(v, m) for v in [*ABLATIONS, *encoders, "zero-shot truncate", "trained truncate", "zero-shot select", "trained select"] for m in (2, 4)}
    assert {(r["variant"], r["m"]) for r in rows} == expected | {("trained text", None)}
    assert all(r["n"] == TINY["n_eval"] and len(r["f1_ci"]) == 2 for r in rows)
    by = {(r["variant"], r["m"]): r for r in rows}
    assert by[("query (tier1)", 2)]["ratio"] == 2 * by[("query (tier1)", 4)]["ratio"]  # tokens per slot
    assert "cross_input_cosine" in by[("+ anti-collapse", 4)] and "cross_input_cosine" not in by[("trained truncate", 4)]
    pretrained = out / "m=4" / experiments.slug("+ pretraining")
    assert (pretrained / "pretrain_history.jsonl").is_file()
    assert read_json(pretrained / "config.json")["experiment"]["loss"]["uniformity_weight"] == 0
    assert read_json(out / "m=4" / experiments.slug("+ anti-collapse") / "config.json")["experiment"]["loss"][
        "uniformity_weight"] == 0.1
    figures = plotly_outputs(tmp_path / "04_ablations.ipynb")
    assert len(figures) == 1 + len(ABLATIONS) + len(encoders)  # F1 vs ratio + collapse over training per compressor
    ratio = figures[0]["data"]["application/vnd.plotly.v1+json"]
    assert {t["name"] for t in ratio["data"]} == {*ABLATIONS, *encoders, "zero-shot truncate", "trained truncate", "zero-shot select", "trained select"}
    assert (tmp_path / "04_ablations.html").is_file()
    # executing again reuses every finished run instead of retraining
    stamp = (pretrained / "metrics.json").stat().st_mtime_ns
    nbrun.execute(NOTEBOOKS / "04_ablations.ipynb", tmp_path, params, log_output=False)
    assert (pretrained / "metrics.json").stat().st_mtime_ns == stamp


def test_pipeline_runs_again_into_its_folder_reusing_finished_training(pipeline_dir):
    trained = [pipeline_dir / "02_tier1_fixes" / s / "metrics.json" for s in STAGES] + \
              [pipeline_dir / "03_retraining" / p / "metrics.json" for p in TRAINED_03]
    stamps = [p.stat().st_mtime_ns for p in trained]
    assert cli.main(["pipeline", "--out", str(pipeline_dir), *tiny_args()]) == 0
    assert [p.stat().st_mtime_ns for p in trained] == stamps


def test_run_rejects_an_unknown_parameter_before_executing(tmp_path, capsys):
    notebook = str(NOTEBOOKS / "01_diagnosis.ipynb")
    code = cli.main(["run", notebook, "--out", str(tmp_path / "x"), "-p", "n_evals", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "n_evals" in err and "n_eval" in err.split("its parameters are:")[1]
    assert not (tmp_path / "x").exists()


def test_a_failing_cell_exits_1_naming_the_notebook_and_cell(tmp_path, capsys):
    nb = nbformat.read(NOTEBOOKS / "01_diagnosis.ipynb", as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell("x = 1\nraise RuntimeError('deliberate failure')"))
    broken = tmp_path / "broken.ipynb"
    nbformat.write(nb, broken)
    code = cli.main(["run", str(broken), "--out", str(tmp_path / "out"), *tiny_args()])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("seqcomp run: error: broken.ipynb failed at cell 2 (In [")
    assert "'x = 1'" in err[-1] and "RuntimeError: deliberate failure" in err[-1]
    partial = tmp_path / "out" / "broken.ipynb"
    assert str(partial) in err[-1] and partial.is_file()
    assert any(o["output_type"] == "error" for o in cell_outputs(partial))
    assert not (tmp_path / "out" / "broken.html").exists()


def test_sweep_runs_each_point_once_and_skips_complete_points(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("m: [2, 3]\n")
    fixed = {k: v for k, v in TINY.items() if k != "m"}
    argv = ["sweep", "01_diagnosis", "--grid", str(grid), "--out", str(tmp_path / "sweep"), "--no-input",
            *tiny_args(fixed)]
    assert cli.main(argv) == 0
    folders = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert folders == ["m=2", "m=3"]
    markers = {f: (tmp_path / "sweep" / f / nbrun.COMPLETE).stat().st_mtime_ns for f in folders}
    for f in folders:
        budget = read_json(tmp_path / "sweep" / f / "01_diagnosis" / "baseline-truncate" / "config.json")["budget"]
        assert budget == int(f.split("=")[1])
        html = (tmp_path / "sweep" / f / "01_diagnosis.html").read_text()
        assert "Zero-shot baselines at the compression budget" in html and "run_baseline" not in html  # --no-input
    assert cli.main(argv) == 0
    assert "m=2: complete, skipped" in capsys.readouterr().out
    assert {f: (tmp_path / "sweep" / f / nbrun.COMPLETE).stat().st_mtime_ns for f in folders} == markers
    sweep = read_json(tmp_path / "sweep" / "sweep.json")
    assert [p["skipped"] for p in sweep["points"]] == [True, True]
    assert len(sweep["runs"]) == 2 * len(KINDS) and {r["point"]["m"] for r in sweep["runs"]} == {2, 3}
    assert "| m=3/01_diagnosis/baseline-truncate | 8 |" in (tmp_path / "sweep" / "sweep.md").read_text()


def test_parameter_parsing_grid_points_and_folder_names(tmp_path):
    assert [nbrun.parse_value(v) for v in ("None", "true", "False", "8", "0.5", "tiny", "1e-3", "[8, 16]")] == \
        [None, True, False, 8, 0.5, "tiny", 1e-3, [8, 16]]
    with pytest.raises(nbrun.NotebookParameterError, match="not JSON"):
        nbrun.parse_value("[8, 16")
    points = nbrun.grid_points({"m": [8, 16], "data": ["synthetic:key-recall"]})
    assert points == [{"m": 8, "data": "synthetic:key-recall"}, {"m": 16, "data": "synthetic:key-recall"}]
    assert nbrun.point_name(points[0]) == "m=8__data=synthetic-key-recall"
    (tmp_path / "bad.yaml").write_text("m: 8\n")
    with pytest.raises(nbrun.NotebookParameterError, match="non-empty lists"):
        nbrun.load_grid(tmp_path / "bad.yaml")
    with pytest.raises(nbrun.NotebookParameterError, match="out_dir"):
        nbrun.run_pipeline(tmp_path, {"out_dir": "x"})


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs_and_with_literal_parameters(path):
    import papermill

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"clear the outputs of {path.name}"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    assert all(isinstance(s, ast.Assign) for s in ast.parse(params[0].source).body)
    declared = nbrun.notebook_parameters(path)  # raises unless every line is `name = literal`
    assert list(papermill.inspect_notebook(str(path))) == list(declared)  # papermill parses every line too
    if path.name in nbrun.PIPELINE:
        assert set(declared) >= {"model", "data", "n_train", "n_eval", "n_select", "m", "epochs", "seed", "out_dir"}
        assert declared["data"] is None and declared["m"] == 32
        defs = [n for c in code for n in ast.walk(ast.parse(c.source)) if isinstance(n, ast.FunctionDef)]
        assert all(d.end_lineno - d.lineno <= 4 for d in defs), "notebooks stay thin: logic belongs in seqcomp"
