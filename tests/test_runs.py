"""Run folders you can trust: one owner of every file (``RunFolder``), locks, no silent overwrite, names that stay
inside the runs directory, non-finite losses, checkpoints that never unpickle, and views that show every logged
loss term and the pretraining stage."""

from __future__ import annotations

import json

import pytest
import torch

from seqcomp import trainer
from seqcomp.checkpoint import STATE_FILE, CheckpointError, load_weights
from seqcomp.cli import main
from seqcomp.config import apply_overrides
from seqcomp.presets import get_preset
from seqcomp.runs import (RUN_OUTPUTS, RunFolder, RunFolderError, finished_runs, load_run, prepare_run_folder, run_lock,
                          safe_relative_path)
from seqcomp.system import CompressionSystem

SMALL = {"data.n_train": 16, "data.n_test": 4, "data.n_select": 2, "train.save_every": 1}


def small_config(**overrides):
    return apply_overrides(get_preset("tiny"), {**SMALL, **overrides})


def test_a_locked_folder_is_refused_with_the_holder_named(tmp_path, tiny):
    run = tmp_path / "run"
    with run_lock(run):
        with pytest.raises(RunFolderError, match=r"being written by another process \(pid \d+"):
            trainer.train(small_config(), run, lm=tiny, progress=False)
    assert not (run / "config.json").exists()


def test_finished_run_needs_overwrite_and_overwrite_replaces_it(tmp_path, tiny, capsys):
    run = tmp_path / "run"
    trainer.train(small_config(), run, lm=tiny, progress=False)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="finished run; pass --overwrite"):
        trainer.train(small_config(), run, lm=tiny, progress=False)
    assert main(["train", "--preset", "tiny", "--out", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    before = (run / "checkpoints" / "best.safetensors").read_bytes()
    trainer.train(small_config(**{"train.lr": 1e-2}), run, lm=tiny, progress=False, overwrite=True)
    assert (run / "notes.txt").read_text() == "mine"  # only seqcomp's own outputs are replaced
    assert json.loads((run / "config.json").read_text())["experiment"]["train"]["lr"] == 1e-2
    assert (run / "checkpoints" / "best.safetensors").read_bytes() != before  # retrained with the new lr


def test_resume_refuses_folders_without_a_resumable_run(tmp_path, tiny, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "config.json" in capsys.readouterr().err
    run = tmp_path / "run"
    trainer.train(small_config(), run, lm=tiny, progress=False)
    assert main(["train", "--resume", str(run)]) == 2
    assert "finished run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--set", "train.lr=1"]) == 2
    assert "own saved config" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["../x", "/etc/x", "runs/../../x", "a b", ".hidden", "runs/-x", "", "runs/x;rm"])
def test_run_names_cannot_escape_the_runs_directory(value):
    with pytest.raises(RunFolderError, match="out_dir"):
        safe_relative_path(value, "out_dir")


def test_safe_run_names_pass():
    assert str(safe_relative_path("runs/m=8__n_train=200", "out_dir")) == "runs/m=8__n_train=200"


def test_papermill_out_dir_parameter_cannot_escape(tmp_path, capsys):
    code = main(["run", "01_diagnosis", "--out", str(tmp_path / "nb"), "-p", "out_dir", "../../elsewhere"])
    assert code == 2
    err = capsys.readouterr().err
    assert "out_dir='../../elsewhere'" in err and "Traceback" not in err
    assert not (tmp_path / "nb" / "01_diagnosis.ipynb").exists()


def _nan_at(call: int, monkeypatch):
    real, calls = trainer.step_losses, {"n": 0}

    def step_losses(*args, **kwargs):
        calls["n"] += 1
        parts = real(*args, **kwargs)
        if calls["n"] == call:
            parts = {**parts, "ce": parts["ce"] * float("nan"), "total": parts["total"] * float("nan")}
        return parts

    monkeypatch.setattr(trainer, "step_losses", step_losses)


def test_non_finite_loss_stops_naming_step_and_term_and_keeps_last_good_state(tmp_path, tiny, monkeypatch):
    _nan_at(3, monkeypatch)
    finished = []

    class Tracker:
        def log(self, row):
            pass

        def finish(self):
            finished.append(True)
    monkeypatch.setattr(trainer, "start_tracker", lambda *args, **kwargs: Tracker())
    run = tmp_path / "run"
    with pytest.raises(trainer.NonFiniteLoss, match=r"non-finite loss_ce, loss_total at step 3 .*on_nonfinite=skip"):
        trainer.train(small_config(**{"data.n_train": 32}), run, lm=tiny, progress=False)
    from safetensors import safe_open

    assert finished == [True]  # the tracker is finished even though training stopped
    with safe_open(str(run / "checkpoints" / STATE_FILE), framework="pt") as fh:
        assert json.loads(fh.metadata()["seqcomp"])["progress"]["step"] == 2
    assert not (run / "metrics.json").exists()


def test_non_finite_batches_can_be_skipped_and_are_counted(tmp_path, tiny, monkeypatch):
    _nan_at(2, monkeypatch)
    run = tmp_path / "run"
    metrics = trainer.train(small_config(**{"train.on_nonfinite": "skip", "data.n_train": 32}), run, lm=tiny, progress=False)
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    skips = [r for r in rows if r["kind"] == "skip"]
    assert len(skips) == 1 and skips[0]["step"] == 2 and skips[0]["terms"] == ["loss_ce", "loss_total"]
    assert metrics["skipped_batches"] == 1
    assert all(torch.isfinite(torch.tensor(r["loss_total"])) for r in rows if r["kind"] == "train")


def test_pickled_or_foreign_checkpoints_are_refused(tmp_path, tiny):
    system = CompressionSystem(small_config(), tiny)
    pickled = tmp_path / "best.safetensors"
    torch.save(system.state_dict(), pickled)  # a pickle under a safetensors name
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint.*never unpickles"):
        load_weights(system, pickled)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(system, tmp_path / "missing.safetensors")
    other = CompressionSystem(small_config(**{"compressor.kind": "pool"}), tiny)
    trainer_dir = tmp_path / "ck"
    from seqcomp.checkpoint import save_weights

    save_weights(other, trainer_dir, "best", {})
    with pytest.raises(CheckpointError, match="does not fit this system"):
        load_weights(system, trainer_dir / "best.safetensors")


# ---- RunFolder: every file kind round-trips, and the folder knows its state ----------------------------------

def test_run_folder_round_trips_every_file_kind(tmp_path):
    from seqcomp.checkpoint import save_weights

    run = RunFolder(tmp_path / "run")
    config = small_config()
    run.write_config({"name": config.name, "kind": "trained", "experiment": config.to_dict()})
    stored = run.read_config()
    assert stored["name"] == config.name and set(stored["environment"]) >= {"packages", "git_commit", "python"}
    assert run.experiment_config() == config
    run.write_doctor([{"name": "bos", "passed": True}, {"name": "anchor", "passed": False}])
    assert [c["passed"] for c in run.read_doctor()] == [True, False]
    assert run.read_diagnostics() == {}  # baselines have none
    run.write_diagnostics({"cross_input_cosine": 0.5})
    assert run.read_diagnostics() == {"cross_input_cosine": 0.5}
    for stage, kind in (("train", "train"), ("pretrain", "pretrain")):
        log = run.history_log(stage)
        log.reset()
        for step in (1, 2, 3):
            log.write({"step": step, "kind": kind, "loss_total": 1.0 / step, "text": "é"})
        log.truncate_after(2)  # what resume does with rows written after the last saved state
        assert [r["step"] for r in run.read_history(stage)] == [1, 2]
    assert run.history_path("train").name == "history.jsonl"
    assert run.history_path("pretrain").name == "pretrain_history.jsonl"
    with pytest.raises(ValueError, match="unknown history stage 'eval'"):
        run.read_history("eval")
    slots = torch.randn(3, 2, 8)
    run.write_compressed(slots, 0.25, ["q0", "q1", "q2"])
    read_slots, ids, rms = run.read_compressed()
    assert torch.equal(read_slots, slots) and ids == ["q0", "q1", "q2"] and rms == 0.25
    save_weights(torch.nn.Linear(2, 2), run.checkpoints, "best", {"step": 7})
    assert run.weights_path("best").is_file() and run.read_checkpoint_meta("best") == {"step": 7}
    assert run.read_checkpoint_meta("pretrained") == {}
    assert run.relative(run.weights_path("best")) == "checkpoints/best.safetensors"
    assert not run.finished
    run.write_eval({"name": "x", "kind": "trained", "experiment": config.to_dict()}, [{"id": "q0", "f1": 1.0}],
                   {"system": "trained:x", "f1": 100.0})
    assert run.read_predictions() == [{"id": "q0", "f1": 1.0}] and run.read_metrics()["f1"] == 100.0
    loaded = load_run(run.path)
    assert loaded.folder.path == run.path and loaded.history == run.read_history()
    assert loaded.diagnostics == {"cross_input_cosine": 0.5}


def test_run_folder_state_follows_its_files(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert (run.started, run.finished, run.interrupted, run.resumable) == (False, False, False, False)
    run.write_config({"name": "x", "kind": "trained"})
    assert (run.started, run.finished, run.interrupted) == (True, False, True)
    with pytest.raises(RunFolderError, match="holds an interrupted run"):
        prepare_run_folder(run.path, resume=False, overwrite=False)
    run.state_path.parent.mkdir(parents=True)
    run.state_path.write_bytes(b"")
    assert run.resumable and run.state_path.name == STATE_FILE
    prepare_run_folder(run.path, resume=True, overwrite=False)  # an interrupted run can be resumed
    run.write_metrics({"system": "x"})
    assert (run.started, run.finished, run.interrupted) == (True, True, False)
    with pytest.raises(RunFolderError, match="finished run"):
        prepare_run_folder(run.path, resume=True, overwrite=False)


def test_run_outputs_are_the_run_folders_names_and_overwrite_removes_only_them(tmp_path):
    assert RUN_OUTPUTS == ("config.json", "metrics.json", "predictions.jsonl", "history.jsonl", "doctor.json",
                           "diagnostics.json", "compressed.safetensors", "compressed_ids.txt", "checkpoints",
                           "pretrain_history.jsonl", "tracking")
    run = RunFolder(tmp_path / "run")
    run.write_eval({"name": "x"}, [], {"system": "x"})
    run.history_log("pretrain").reset()
    run.write_compressed(torch.zeros(1, 1, 2), 1.0, ["q0"])
    (run.path / "notes.txt").write_text("mine")
    prepare_run_folder(run.path, resume=False, overwrite=True)
    assert sorted(p.name for p in run.path.iterdir()) == ["notes.txt"]


def test_experiment_config_names_the_file_when_it_is_not_a_training_run(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.write_config({"name": "x"})
    with pytest.raises(RunFolderError, match=r"run/config.json has no 'experiment' section; is it a seqcomp"):
        run.experiment_config()
    run.config_path.write_text("{not json")
    with pytest.raises(RunFolderError, match="config.json is not valid JSON"):
        run.experiment_config(hint="give a trained run")


def test_finished_runs_are_found_in_path_order(tmp_path):
    for name in ("b", "a", "a/eval-n4", "c"):
        RunFolder(tmp_path / name).write_eval({"name": name}, [], {"system": name})
    RunFolder(tmp_path / "d").write_config({"name": "interrupted"})
    assert [r.path.relative_to(tmp_path).as_posix() for r in finished_runs(tmp_path)] == ["a/eval-n4", "a", "b", "c"]
    assert [r.path.name for r in finished_runs(tmp_path, recursive=False)] == ["a", "b", "c"]


# ---- the views show every logged loss term, and the pretraining stage ------------------------------------------

def _history(terms: tuple[str, ...]) -> list[dict]:
    rows = [{"step": 0, "kind": "eval", "select_f1": 0.0}]
    rows += [{"step": s, "kind": "train", "lr": 1e-3, **{f"loss_{t}": 1.0 / s for t in terms}} for s in (1, 2, 3)]
    return rows


def test_training_figure_draws_every_loss_term_in_the_history():
    import widgets

    terms = ("ce", "first_token", "uniformity", "slot_diversity", "kd", "total")
    fig = widgets.training_figure(_history(terms))
    losses = [t.name for t in fig.data if t.legendgroup == "loss"]
    assert losses == ["total", "ce", "first_token", "uniformity", "slot_diversity", "kd"]
    assert widgets.figures.loss_terms(_history(terms))[:1] == ["loss_total"]
    assert "uniformity" not in {t.name for t in widgets.training_figure(_history(("ce", "total"))).data}


def test_dashboard_shows_the_pretraining_stage_when_the_run_has_one(tmp_path):
    import widgets

    run = RunFolder(tmp_path / "run")
    log = run.history_log("train")
    log.reset()
    for row in _history(("ce", "total")):
        log.write(row)
    plain = widgets.TrainingDashboard(run.path)
    assert plain.pretrain_history == [] and plain.pretraining_panel.layout.display == "none"
    assert "pretraining" not in plain.status.value
    pretrain = run.history_log("pretrain")
    for step in (1, 2):
        pretrain.write({"step": step, "kind": "pretrain", "loss_reconstruction": 3.0 / step,
                        "loss_continuation": 2.0 / step, "loss_total": 2.5 / step})
    assert plain.refresh() == 4  # the QA history rows, as before
    assert plain.pretraining_panel.layout.display != "none" and "2 pretraining rows" in plain.status.value
    names = {t.name: t for t in plain.pretraining.data}
    assert list(names) == ["total", "reconstruction", "continuation"]
    assert list(names["reconstruction"].x) == [1, 2] and list(names["reconstruction"].y) == [3.0, 1.5]
    static = widgets.TrainingDashboard(run.path).static_pretraining_figure()
    assert [t.name for t in static.data] == ["total", "reconstruction", "continuation"]
    assert static.layout.xaxis.title.text == "pretraining step"
