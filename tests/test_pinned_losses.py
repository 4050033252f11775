"""Pinned numbers, the way torchtune pins its recipes: a few real training steps per loss lever and compressor kind,
their per-step loss terms compared with recorded values (``tests/data/pinned_losses.json``).

Each case trains the ``tiny`` preset (random 2-layer model, synthetic key recall, here with answers of 1 to 4
words) for 4 steps through the real ``seqcomp.trainer.train`` on one CPU thread with the preset's fixed seed, and
compares every ``loss_*`` term of every ``history.jsonl`` training row (and ``pretrain_history.jsonl`` for the
pretraining stage) with the record.
A refactor that means to change nothing must leave these numbers where they are.

Re-record ONLY for an intended change of behaviour (a new default, a fixed bug), and say in the commit why the
numbers moved::

    SEQCOMP_RECORD_PINNED=1 OMP_NUM_THREADS=1 python -m pytest tests/test_pinned_losses.py

(``-k <case>`` re-records only that case; cases no longer defined here are dropped from the file.)
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from seqcomp.config import apply_overrides
from seqcomp.data import SquadExample
from seqcomp.presets import get_preset
from seqcomp.slices import load_slices
from seqcomp.trainer import train

PINNED = Path(__file__).parent / "data" / "pinned_losses.json"
RECORD = os.environ.get("SEQCOMP_RECORD_PINNED") == "1"
# On one machine and one thread the values repeat bit for bit. The tolerance only absorbs summation-order noise
# (another CPU or BLAS build): the same cases on 2 threads instead of 1 drift by up to 3e-6 relative after 4 Adam
# steps, a thirtieth of REL. Every recorded term is above 0.15 in size, so ABS never loosens a comparison.
REL, ABS = 1e-4, 1e-5

# 32 questions at batch 8: 4 training steps; 2 selection and 2 test questions keep the evaluations short
SHORT = {"data.n_train": 32, "data.n_select": 2, "data.n_test": 2}
CASES: dict[str, dict] = {
    # loss levers (LossConfig), on the tiny preset's query compressor over token embeddings
    "ce": {},
    "ce_weight": {"loss.ce_weight": 0.5},
    "first_token": {"loss.first_token_weight": 0.5},
    "k_token": {"loss.k_weight": 0.5, "loss.k_tokens": 2},
    "kd": {"loss.kd_weight": 0.5, "loss.kd_tau": 2.0},
    "dense_kd": {"loss.dense_kd_weight": 0.5},
    "uniformity": {"loss.uniformity_weight": 0.1},
    "slot_diversity": {"loss.slot_diversity_weight": 0.1},
    "scheduled_sampling": {"loss.scheduled_sampling": 0.5},
    "all_terms": {"loss.ce_weight": 0.5, "loss.first_token_weight": 0.5, "loss.k_weight": 0.5, "loss.kd_weight": 0.5,
                  "loss.dense_kd_weight": 0.5, "loss.uniformity_weight": 0.1, "loss.slot_diversity_weight": 0.1},
    "pretrain": {"pretrain.passages": 16},  # 2 pretraining steps, then QA training from those weights
    # compressor kinds and sources
    "pool": {"compressor.kind": "pool"},
    "pool_hidden": {"compressor.kind": "pool", "compressor.source": "hidden", "compressor.source_layer": 1},
    "query_diagnosed": {"compressor.calibrate": False, "compressor.position_scale": "unit",
                        "compressor.compress_question": True},
    "encoder": {"compressor.kind": "encoder", "compressor.encoder_layers": 1},
    "encoder_bidirectional": {"compressor.kind": "encoder", "compressor.encoder_layers": 1,
                              "compressor.bidirectional": True},
    "text": {"compressor.kind": "text"},
    "truncate": {"compressor.kind": "truncate"},
    "select": {"compressor.kind": "select"},
}


@pytest.fixture(scope="module")
def lm():
    """A fresh tiny LM for this module: its hidden-state feature cache is filled on one thread only."""
    from seqcomp.lm import load_lm

    return load_lm("tiny", "fp32")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def loss_rows(path: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{"step": r["step"], **{k: v for k, v in r.items() if k.startswith("loss_")}}
            for r in rows if r["kind"] == kind]


def with_answer_words(example: SquadExample, n: int) -> SquadExample:
    """The key sentence's last ``n`` words as the answer ("red", "is red", "key is red", "The key is red")."""
    sentence = next(s for s in example.context.split(". ") if s.startswith("The key is"))
    answer = " ".join(sentence.rstrip(".").split()[-n:])
    return dataclasses.replace(example, answers=(answer,), answer_starts=(example.context.index(answer),))


def run_case(name: str, lm, out: Path) -> dict:
    cfg = apply_overrides(get_preset("tiny"), {**SHORT, **CASES[name]})
    slices = load_slices(cfg.data)
    # key-recall answers are all one word long; answers of 1 to 4 words make the per-question means, the first-K
    # cut (loss.k_tokens) and the answer-aligned KD positions differ from their all-equal-length special case
    train_slice = tuple(with_answer_words(e, 1 + i % 4) for i, e in enumerate(slices.train))
    # the doctor is not what is pinned here (truncate/select at M=4 fail its answer-coverage check on purpose)
    train(cfg, out, lm=lm, slices=dataclasses.replace(slices, train=train_slice), progress=False,
          allow_failed_checks=True)
    history = out / "history.jsonl"
    assert not [r for r in map(json.loads, history.read_text().splitlines()) if r["kind"] == "skip"]
    got = {"overrides": CASES[name], "train": loss_rows(history, "train")}
    if (out / "pretrain_history.jsonl").is_file():
        got["pretrain"] = loss_rows(out / "pretrain_history.jsonl", "pretrain")
    return got


def load_pinned() -> dict:
    return json.loads(PINNED.read_text()) if PINNED.is_file() else {"cases": {}}


def record(name: str, got: dict) -> None:
    cases = {**load_pinned()["cases"], name: got}
    doc = {"about": "per-step loss terms of tests/test_pinned_losses.py; re-record only for an intended change "
                    "(see that file's docstring)",
           "torch": torch.__version__, "cases": {n: cases[n] for n in CASES if n in cases}}
    PINNED.parent.mkdir(exist_ok=True)
    PINNED.write_text(json.dumps(doc, indent=1) + "\n")


def differences(pinned: dict, got: dict) -> list[str]:
    """Every step/term that differs, as readable lines (empty when the run matches the record)."""
    out = []
    for stage in ("pretrain", "train"):
        want, have = pinned.get(stage, []), got.get(stage, [])
        if [r["step"] for r in want] != [r["step"] for r in have]:
            out.append(f"{stage}: steps {[r['step'] for r in have]}, recorded {[r['step'] for r in want]}")
            continue
        for w, h in zip(want, have):
            if set(w) != set(h):
                out.append(f"{stage} step {w['step']}: terms {sorted(h)}, recorded {sorted(w)}")
                continue
            for key in sorted(set(w) - {"step"}):
                if h[key] != pytest.approx(w[key], rel=REL, abs=ABS):
                    out.append(f"{stage} step {w['step']} {key}: {h[key]!r}, recorded {w[key]!r} "
                               f"(rel diff {abs(h[key] - w[key]) / max(abs(w[key]), 1e-12):.2e})")
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_losses_match_the_recorded_values(name, lm, one_thread, tmp_path):
    got = run_case(name, lm, tmp_path / name)
    if RECORD:
        record(name, got)
        return
    pinned = load_pinned()["cases"].get(name)
    assert pinned is not None, \
        f"no recorded values for case {name!r}: SEQCOMP_RECORD_PINNED=1 pytest {__file__} -k {name}"
    assert pinned["overrides"] == got["overrides"], \
        f"case {name!r} changed its overrides since it was recorded; re-record it if that was intended"
    assert "loss_total" in got["train"][0] and len(got["train"]) == 4
    diff = differences(pinned, got)
    if diff:
        pytest.fail(f"case {name!r} ({CASES[name]}) moved from its recorded losses:\n" + "\n".join(diff),
                    pytrace=False)


def test_the_record_holds_exactly_the_defined_cases():
    if RECORD:
        pytest.skip("recording")
    assert list(load_pinned()["cases"]) == list(CASES), "re-record: SEQCOMP_RECORD_PINNED=1 pytest " + __file__
