"""The public API (seqcomp.load), TensorBoard tracking and `seqcomp export`, on a tiny run trained once per module.

The API must give exactly what the run's evaluation gave (same slots, same answers, same EM/F1), and an exported
folder must load to the same system. The slow test repeats this on the real SmolLM2 and real SQuAD.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap

import pytest
import torch
from safetensors.torch import load_file

import seqcomp
from conftest import REPO, SHARED_SQUAD, real_squad_available
from seqcomp.cli import main
from seqcomp.config import TRACKERS, ConfigError, apply_overrides
from seqcomp.export import export_run
from seqcomp.lm import LM
from seqcomp.presets import get_preset
from seqcomp.runs import RunFolderError, read_jsonl
from seqcomp.slices import eval_slices
from seqcomp.trainer import train

SMALL = {"data.n_train": 16, "data.n_select": 4, "data.n_test": 8, "train.log_with": "tensorboard"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny):
    """A finished tiny run, logged to TensorBoard as well."""
    run = tmp_path_factory.mktemp("api") / "run"
    train(apply_overrides(get_preset("tiny"), SMALL), run, lm=tiny, progress=False)
    return run


def assert_same_as_the_run(system, run, test) -> None:
    """Slots, answers and metrics equal what training wrote for the test slice."""
    saved = load_file(str(run / "compressed.safetensors"))["slots"]
    ids = (run / "compressed_ids.txt").read_text().split()
    by_id = {e.id: e for e in test}
    assert torch.equal(system.compress([by_id[i].context for i in ids]).cpu(), saved)
    predictions = read_jsonl(run / "predictions.jsonl")
    answers = system.answer_batch([e.context for e in test], [e.question for e in test])
    assert answers == [r["prediction"] for r in predictions]
    assert system.answer(test[0].context, test[0].question) == predictions[0]["prediction"]
    records, summary = system.evaluate(test, progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert (summary.exact_match, summary.f1, summary.n) == (metrics["exact_match"], metrics["f1"], metrics["n"])
    assert [r["prediction"] for r in records] == answers


def test_load_gives_exactly_what_the_runs_evaluation_gave(run_dir, tiny):
    system = seqcomp.load(run_dir, lm=tiny)
    test = eval_slices(system.config.data)[1]
    assert_same_as_the_run(system, run_dir, test)
    assert system.compress(["a", "bb"]).shape == (2, 4, tiny.hidden_size)
    assert "tiny" in repr(system) and system.metrics["n"] == 8


def test_wrong_folders_and_inputs_get_errors_naming_the_cause(run_dir, tmp_path, tiny, capsys):
    with pytest.raises(RunFolderError, match=f"{tmp_path / 'nope'} does not exist"):
        seqcomp.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="config.json and checkpoints/best.safetensors missing"):
        seqcomp.load(tmp_path / "empty")
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "config.json").write_text(json.dumps({"name": "baseline-none", "kind": "baseline"}))
    with pytest.raises(RunFolderError, match="checkpoints/best.safetensors missing"):
        seqcomp.load(baseline)
    assert main(["eval", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "empty") in err and "config.json" in err
    renamed = LM(model=tiny.model, tokenizer=tiny.tokenizer, name="smollm2-135m-instruct")
    with pytest.raises(ValueError, match="trained for model 'tiny' but the given lm is 'smollm2"):
        seqcomp.load(run_dir, lm=renamed)
    with pytest.raises(ValueError, match="pass lm or device, not both"):
        seqcomp.load(run_dir, lm=tiny, device="cpu")
    system = seqcomp.load(run_dir, lm=tiny)
    with pytest.raises(ValueError, match="2 contexts but 1 questions"):
        system.answer_batch(["a", "b"], ["q"])
    with pytest.raises(TypeError, match="not a single string"):
        system.compress("one passage")


def test_export_is_self_contained_loads_to_the_same_system_and_has_a_model_card(run_dir, tmp_path, tiny, capsys):
    out = export_run(run_dir, tmp_path / "shared" / "tiny")
    for name in ("config.json", "metrics.json", "checkpoints/best.safetensors", "history.jsonl", "README.md"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints" / "state.safetensors").exists() and not (out / "predictions.jsonl").exists()
    card = (out / "README.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    f1 = f"{metrics['f1']:.1f} [{metrics['f1_ci'][0]:.1f}, {metrics['f1_ci'][1]:.1f}]"
    for text in ("# seqcomp compressor: tiny", "cross-attention compressor (4 learned queries", "`tiny`",
                 "synthetic key-recall", "16 training questions", "(2 steps)", f1, 'seqcomp.load("path/to/this',
                 "Exported from run `run`"):
        assert text in card, text
    system = seqcomp.load(out, lm=tiny)
    assert_same_as_the_run(system, run_dir, eval_slices(system.config.data)[1])
    with pytest.raises(RunFolderError, match="already exists and is not an empty folder"):
        export_run(run_dir, out)
    assert main(["export", str(run_dir), str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "README.md").read_text() == card
    assert main(["eval", str(out), "--n", "4", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 4
    capsys.readouterr()


def test_unfinished_runs_are_not_exported(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "metrics.json").unlink()
    with pytest.raises(RunFolderError, match=r"has not finished \(metrics.json is missing\)"):
        export_run(run, tmp_path / "out")


def test_tensorboard_event_file_holds_every_history_metric_at_its_step(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tracking" / "seqcomp"))
    events.Reload()
    history = read_jsonl(run_dir / "history.jsonl")
    train_row = next(r for r in history if r["kind"] == "train")
    eval_row = history[-1]
    assert eval_row["kind"] == "eval"
    tags = set(events.Tags()["scalars"])
    expected = {k for k in (*train_row, *eval_row) if re.match(r"loss_|select_|diag_|lr$|grad_norm$", k)}
    assert {"loss_total", "loss_ce", "lr", "grad_norm", "select_f1", "diag_cross_input_cosine"} <= expected <= tags
    for row in (train_row, eval_row):
        for key in expected & set(row):
            (point,) = [s for s in events.Scalars(key) if s.step == row["step"]]
            assert point.value == pytest.approx(row[key], rel=1e-6, abs=1e-7), key
    assert [s.step for s in events.Scalars("select_f1")] == [r["step"] for r in history if r["kind"] == "eval"]


def test_log_with_names_accelerate_trackers_and_a_missing_package_is_named():
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    from seqcomp.tracking import PIP_PACKAGES, require_tracker

    assert set(TRACKERS) <= set(LOGGER_TYPE_TO_CLASS) and set(PIP_PACKAGES) == set(TRACKERS)
    with pytest.raises(ConfigError, match="train.log_with.*'nope' is not one of tensorboard"):
        apply_overrides(get_preset("tiny"), {"train.log_with": "nope"})
    missing = [t for t in TRACKERS if t not in {str(a) for a in get_available_trackers()}]
    if missing:
        with pytest.raises(ConfigError, match=f"pip install {PIP_PACKAGES[missing[0]]}"):
            require_tracker(missing[0])


def example_blocks() -> dict[str, str]:
    """The example in the README section and in seqcomp.api's docstring (they must be the same code)."""
    readme = (REPO / "README.md").read_text().split("## Use a trained compressor from Python", 1)[1]
    from seqcomp import api

    return {"README": readme.split("```python\n", 1)[1].split("```", 1)[0],
            "docstring": textwrap.dedent(api.__doc__.split("::\n\n", 1)[1])}


@pytest.mark.parametrize("where", ["README", "docstring"])
def test_the_documented_example_runs(where, run_dir, tmp_path, monkeypatch, capsys):
    code = example_blocks()[where]
    assert "seqcomp.load(" in code
    shutil.copytree(run_dir, tmp_path / "runs" / "tiny")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"<{where} example>", "exec"), {})
    assert "torch.Size([1, 4, 64])" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not real_squad_available(), reason=f"real SQuAD not found at {SHARED_SQUAD}")
def test_api_tracking_and_export_on_a_real_smollm2_run(tmp_path):
    from seqcomp.lm import load_lm

    smol = load_lm("smollm2-135m-instruct", "fp32")
    cfg = apply_overrides(get_preset("tier1"), {"data.source": str(SHARED_SQUAD), "data.n_train": 8,
                                                "data.n_select": 4, "data.n_test": 4, "train.batch_size": 4,
                                                "train.log_with": "tensorboard", "generation.max_new_tokens": 32})
    run = tmp_path / "run"
    train(cfg, run, lm=smol, progress=False)
    assert list((run / "tracking" / "seqcomp").glob("events.out.tfevents.*"))
    out = export_run(run, tmp_path / "export")
    card = (out / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "SQuAD v1.1" in card
    for folder in (run, out):
        system = seqcomp.load(folder, lm=smol)
        assert_same_as_the_run(system, run, eval_slices(system.config.data)[1])
