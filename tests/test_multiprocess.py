"""Two CPU processes under ``accelerate launch`` train the same model as one process does."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# A plain shuffle (length_window=1): length-sorted batches hand the short half of each batch to one process and
# the long half to the other, so padded shapes differ from the one-process run; the losses still agree to ~1e-7,
# but Adam turns that float noise on near-zero gradient entries into weight differences of ~5e-5.
ARGS = ["train", "--preset", "tiny", "--set", "data.n_train=32", "--set", "data.n_test=8", "--set", "data.n_select=4",
        "--set", "train.batch_size=8", "--set", "train.epochs=2", "--set", "train.length_window=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate CLI not installed")
def test_two_processes_match_one(tmp_path):
    accelerate = str(Path(sys.executable).parent / "accelerate")
    _run([sys.executable, "-m", "seqcomp.cli", *ARGS, "--out", str(tmp_path / "one")], tmp_path)
    # accelerate 1.x: `--cpu` always runs one process; `--multi_gpu` on a machine without GPUs launches
    # N processes through torch.distributed.run, and Accelerator(cpu=True) joins them over gloo.
    _run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
          "-m", "seqcomp.cli", *ARGS, "--out", str(tmp_path / "two")], tmp_path)
    one = load_file(str(tmp_path / "one" / "checkpoints" / "last.safetensors"))
    two = load_file(str(tmp_path / "two" / "checkpoints" / "last.safetensors"))
    assert one.keys() == two.keys()
    for key in one:
        a, b = one[key], two[key]
        if key.endswith("attn.in_proj_bias"):
            # the key bias gets an exactly-zero true gradient (softmax ignores a per-query shift), so its
            # update is Adam-normalised float noise that differs with reduction order: compare q and v only
            d = a.shape[0] // 3
            a, b = torch.cat([a[:d], a[2 * d:]]), torch.cat([b[:d], b[2 * d:]])
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)
    h1 = [json.loads(x) for x in (tmp_path / "one" / "history.jsonl").read_text().splitlines()]
    h2 = [json.loads(x) for x in (tmp_path / "two" / "history.jsonl").read_text().splitlines()]
    losses1 = [r["loss_total"] for r in h1 if r["kind"] == "train"]
    losses2 = [r["loss_total"] for r in h2 if r["kind"] == "train"]
    assert len(losses1) == len(losses2) == 8
    assert losses1 == pytest.approx(losses2, rel=1e-4)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (m1["exact_match"], m1["f1"]) == (m2["exact_match"], m2["f1"])
    assert json.loads((tmp_path / "two" / "config.json").read_text())["processes"] == 2
