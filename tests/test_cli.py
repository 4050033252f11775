"""The command line: every command listed, clear one-line errors, and train -> eval on the tiny preset."""

from __future__ import annotations

import json

import pytest

from seqcomp.cli import build_parser, main
from seqcomp.synthetic import key_recall_examples, write_squad_json

TINY = ["--preset", "tiny"]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("score", "diagnose", "baseline", "demo", "doctor", "train", "eval"):
        assert command in out
    assert build_parser().parse_args(["doctor", "--preset", "tier1"]).command == "doctor"


def test_score_prints_official_format_and_counts(tmp_path, capsys):
    examples = key_recall_examples(10, seed=3)
    data = write_squad_json(examples, tmp_path / "dev.json")
    preds = {e.id: e.answers[0] for e in examples[:8]}
    preds["not-a-real-id"] = "x"
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    assert main(["score", str(tmp_path / "pred.json"), "--data", str(data)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"exact_match": 80.0, "f1": 80.0}
    assert "2 of 10 questions have no prediction" in captured.err and "not in the data" in captured.err


def test_user_errors_are_one_line_with_exit_2(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["score", str(tmp_path / "bad.json"), "--data", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.json" in err
    assert main(["doctor", *TINY, "--set", "compressor.m=0"]) == 2
    assert "compressor.m" in capsys.readouterr().err
    assert main(["doctor", "--preset", "nope"]) == 2
    assert "known presets" in capsys.readouterr().err


def test_doctor_exit_status(capsys):
    assert main(["doctor", *TINY]) == 0
    assert "15 passed, 0 failed" in capsys.readouterr().out
    assert main(["doctor", *TINY, "--set", "generation.max_new_tokens=1", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["generation length"]


def test_train_then_eval_and_baseline(tmp_path, capsys):
    run = tmp_path / "run"
    sets = ["--set", "data.n_train=16", "--set", "data.n_test=8", "--set", "data.n_select=4"]
    assert main(["train", *TINY, *sets, "--out", str(run)]) == 0
    assert main(["eval", str(run), "--n", "4"]) == 0
    metrics = json.loads((run / "eval-n4" / "metrics.json").read_text())
    assert metrics["n"] == 4
    assert main(["eval", str(run), "--n", "4", "--batch-size", "3", "--out", str(tmp_path / "b3")]) == 0
    assert json.loads((tmp_path / "b3" / "config.json").read_text())["experiment"]["generation"]["batch_size"] == 3
    assert json.loads((tmp_path / "b3" / "metrics.json").read_text())["n"] == 4
    assert main(["baseline", "none", *TINY, "--n", "4", "--out", str(tmp_path / "none")]) == 0
    assert json.loads((tmp_path / "none" / "metrics.json").read_text())["n"] == 4
    assert main(["baseline", "none", *TINY, "--n", "2", "--out", str(tmp_path / "none")]) == 2  # finished run kept
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((tmp_path / "none" / "metrics.json").read_text())["n"] == 4
    assert main(["baseline", "none", *TINY, "--n", "2", "--out", str(tmp_path / "none"), "--overwrite"]) == 0
    assert json.loads((tmp_path / "none" / "metrics.json").read_text())["n"] == 2
    assert main(["baseline", "truncate", *TINY, "--n", "4", "--out", str(tmp_path / "t")]) == 2  # needs --budget
    assert "--budget" in capsys.readouterr().err


def test_eval_n_accepts_a_count_or_all(capsys):
    parser = build_parser()
    assert parser.parse_args(["eval", "runs/x", "--n", "all"]).n == "all"
    assert parser.parse_args(["eval", "runs/x", "--n", "12"]).n == 12
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "runs/x", "--n", "some"])
    assert "positive number of questions or 'all'" in capsys.readouterr().err
    assert parser.parse_args(["eval", "runs/x", "--batch-size", "64"]).batch_size == 64
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "runs/x", "--batch-size", "0"])


@pytest.mark.slow
def test_full_test_size_is_the_dev_test_pool():
    from seqcomp.config import DataConfig
    from seqcomp.slices import eval_slices, full_test_size

    from conftest import SHARED_SQUAD, real_squad_available

    if not real_squad_available():
        pytest.skip("real SQuAD dev is not beside the checkout")
    data = DataConfig(source=str(SHARED_SQUAD), n_select=100)
    n = full_test_size(data)
    assert 8000 < n < 10_570  # every dev question outside the selection articles (20% of the questions)
    _, test, _ = eval_slices(DataConfig(source=str(SHARED_SQUAD), n_select=100, n_test=n))
    assert len({e.id for e in test}) == n
