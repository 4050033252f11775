"""Run folders you can trust: locks, no silent overwrite, names that stay inside the runs directory,
non-finite losses, and checkpoints that never unpickle."""

from __future__ import annotations

import json

import pytest
import torch

from seqcomp import trainer
from seqcomp.checkpoint import STATE_FILE, CheckpointError, load_weights
from seqcomp.cli import main
from seqcomp.config import apply_overrides
from seqcomp.presets import get_preset
from seqcomp.runs import RunFolderError, run_lock, safe_relative_path
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
    run = tmp_path / "run"
    with pytest.raises(trainer.NonFiniteLoss, match=r"non-finite loss_ce, loss_total at step 3 .*on_nonfinite=skip"):
        trainer.train(small_config(**{"data.n_train": 32}), run, lm=tiny, progress=False)
    from safetensors import safe_open

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
