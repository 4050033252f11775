"""Kill a real training subprocess with SIGKILL mid-run, resume it, and compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from seqcomp.checkpoint import STATE_FILE

# 64 questions, batch 8, 3 epochs = 24 steps; a resumable state after every step, evaluations every 8
SETTINGS = ["data.n_train=64", "data.n_select=8", "data.n_test=16", "train.epochs=3", "train.eval_every=8",
            "train.save_every=1"]
TOTAL_STEPS = 24


def _train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "seqcomp.cli", "train", *args]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _rows(run: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def _last_step(run: Path) -> int:
    path = run / "history.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


def _comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "seconds"}


def _losses(rows: list[dict], after: int) -> dict[int, dict]:
    """Every loss term of the training steps after ``after``, by step."""
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("loss_")} for r in rows if r["step"] > after}


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    sets = [x for s in SETTINGS for x in ("--set", s)]
    full = tmp_path / "full"
    subprocess.run(_train_cmd("--preset", "tiny", *sets, "--out", str(full)), env=_env(), check=True,
                   capture_output=True, text=True, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd("--preset", "tiny", *sets, "--out", str(killed)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while _last_step(killed) < 11 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # mid second epoch, possibly in the middle of writing a file
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"

    # the last complete state is intact and behind the point of the kill
    from safetensors import safe_open

    with safe_open(str(killed / "checkpoints" / STATE_FILE), framework="pt") as fh:
        saved = json.loads(fh.metadata()["seqcomp"])["progress"]
    assert 0 < saved["step"] < TOTAL_STEPS

    # without --resume the folder is refused; with it the run continues where the state left off
    refused = subprocess.run(_train_cmd("--preset", "tiny", *sets, "--out", str(killed)), env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "--resume" in refused.stderr and "Traceback" not in refused.stderr
    subprocess.run(_train_cmd("--resume", str(killed)), env=_env(), check=True, capture_output=True, text=True, timeout=600)

    full_train, resumed_train = _rows(full, "train"), _rows(killed, "train")
    assert [r["step"] for r in resumed_train] == list(range(1, TOTAL_STEPS + 1))
    # the steps trained after the resume point give exactly the losses of the uninterrupted run
    resumed_losses = _losses(resumed_train, after=saved["step"])
    assert sorted(resumed_losses) == list(range(saved["step"] + 1, TOTAL_STEPS + 1))
    assert all({"loss_total", "loss_ce"} <= set(terms) for terms in resumed_losses.values())
    assert resumed_losses == _losses(full_train, after=saved["step"])
    assert [_comparable(r) for r in resumed_train] == [_comparable(r) for r in full_train]  # bit-for-bit
    assert [_comparable(r) for r in _rows(killed, "eval")] == [_comparable(r) for r in _rows(full, "eval")]
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (full, killed)]
    for m in metrics:
        m.pop("train_seconds")
    assert metrics[0] == metrics[1]
    assert (full / "predictions.jsonl").read_text() == (killed / "predictions.jsonl").read_text()
    assert (full / "checkpoints" / "best.safetensors").read_bytes() == \
        (killed / "checkpoints" / "best.safetensors").read_bytes()
