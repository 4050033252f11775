"""Tier 3 levers: anti-collapse regularisers and scheduled sampling, on the one layout."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from seqcomp.config import ConfigError, apply_overrides
from seqcomp.layout import build_lm_input
from seqcomp.losses import answers_for, scheduled_sampling_input, slot_diversity_loss, uniformity_loss
from seqcomp.presets import get_preset
from seqcomp.system import CompressionSystem
from seqcomp.trainer import train


def test_uniformity_is_zero_for_collapsed_inputs_and_lower_when_spread():
    collapsed = torch.ones(4, 3, 8)
    assert float(uniformity_loss(collapsed)) == pytest.approx(0.0, abs=1e-6)
    spread = torch.eye(8)[:4, None, :].expand(4, 3, 8)  # four orthogonal inputs: |zi - zj|^2 = 2
    assert float(uniformity_loss(spread)) == pytest.approx(-4.0, abs=1e-5)
    with pytest.raises(ValueError, match="at least 2 questions"):
        uniformity_loss(torch.ones(1, 3, 8))


def test_slot_diversity_is_one_for_duplicated_slots_and_zero_for_orthogonal():
    assert float(slot_diversity_loss(torch.ones(2, 4, 8))) == pytest.approx(1.0)
    assert float(slot_diversity_loss(torch.eye(8)[None, :4].expand(2, 4, 8))) == pytest.approx(0.0)


def _batch(tiny, examples, p):
    cfg = get_preset("tiny")
    system = CompressionSystem(cfg, tiny)
    answers, _ = answers_for(tiny, cfg, examples)
    prefixes = system.prefixes(tiny, examples)
    gold = build_lm_input(tiny.embed, prefixes, answers, pad_id=tiny.pad_id)
    return gold, scheduled_sampling_input(tiny, gold, prefixes, answers, p), answers


def test_scheduled_sampling_changes_only_answer_inputs_and_keeps_gold_labels(tiny, examples):
    gold, same, _ = _batch(tiny, examples, 0.0)
    assert torch.equal(same.inputs_embeds, gold.inputs_embeds) and torch.equal(same.labels, gold.labels)
    torch.manual_seed(0)
    gold, own, answers = _batch(tiny, examples, 1.0)
    assert torch.equal(own.labels, gold.labels) and torch.equal(own.attention_mask, gold.attention_mask)
    answer_cols = gold.labels != -100
    assert torch.equal(own.inputs_embeds[~answer_cols], gold.inputs_embeds[~answer_cols])  # prefix untouched
    # with p = 1 every answer input is the embedding of the model's own greedy token at that position
    from seqcomp.losses import answer_logits

    predicted = answer_logits(tiny, gold).logits.argmax(-1)
    for row, answer in enumerate(answers):
        cols = answer_cols[row].nonzero().flatten()
        expected = tiny.embed(predicted[row, : len(answer)])
        assert torch.allclose(own.inputs_embeds[row, cols], expected)
    assert not torch.equal(own.inputs_embeds, gold.inputs_embeds)


def test_bad_tier3_settings_get_clear_errors():
    with pytest.raises(ConfigError, match="loss.scheduled_sampling"):
        apply_overrides(get_preset("tiny"), {"loss.scheduled_sampling": 1.5})
    with pytest.raises(ConfigError, match="loss.uniformity_weight"):
        apply_overrides(get_preset("tiny"), {"loss.uniformity_weight": -1})


def test_regularisers_are_logged_and_spread_the_compressed_inputs(tmp_path, tiny):
    base = {"data.n_train": 64, "data.n_test": 8, "data.n_select": 8, "train.epochs": 2, "train.lr": 1e-2,
            "loss.scheduled_sampling": 0.5}
    diags = {}
    for name, weight in (("plain", 0.0), ("regularised", 2.0)):
        cfg = apply_overrides(get_preset("tiny"), {**base, "loss.uniformity_weight": weight,
                                                   "loss.slot_diversity_weight": weight})
        train(cfg, tmp_path / name, lm=tiny, progress=False)
        rows = [json.loads(line) for line in (tmp_path / name / "history.jsonl").read_text().splitlines()]
        diags[name] = json.loads((tmp_path / name / "diagnostics.json").read_text())
        if weight:
            assert all("loss_uniformity" in r and "loss_slot_diversity" in r for r in rows if r["kind"] == "train")
    assert diags["regularised"]["cross_input_cosine"] < diags["plain"]["cross_input_cosine"]
    assert diags["regularised"]["within_sequence_cosine"] < diags["plain"]["within_sequence_cosine"]


def test_pretraining_rows_follow_the_mix_and_cut_the_passage(tiny):
    from seqcomp.layout import text_ids
    from seqcomp.pretrain import CONTINUE, RECONSTRUCT, pretrain_rows
    from seqcomp.synthetic import key_recall_examples

    examples = key_recall_examples(12, seed=0)
    passages = list(dict.fromkeys(e.context for e in examples))[:8]
    for ratio, task in ((1.0, RECONSTRUCT), (0.0, CONTINUE)):
        cfg = apply_overrides(get_preset("tiny"), {"pretrain.passages": 8, "pretrain.reconstruction_ratio": ratio,
                                                  "pretrain.target_tokens": 6})
        rows = pretrain_rows(tiny, passages, cfg, torch.Generator().manual_seed(0))
        assert len(rows) == 8 and {r.task for r in rows} == {task}
        for row, context in zip(rows, passages):
            ids = text_ids(tiny.tokenizer, context)
            if task == RECONSTRUCT:
                assert row.text == context and row.target == tuple(ids[:6])
            else:  # the compressor reads the start, the target is what follows it
                cut = len(ids) - len(row.target) if len(ids) - 6 >= len(ids) // 2 else len(ids) // 2
                assert row.target == tuple(ids[cut: cut + 6]) and len(row.target) > 0
                assert context.startswith(row.text.strip()[:10])


def test_pretraining_lowers_its_loss_and_qa_training_starts_from_it(tmp_path, tiny):
    cfg = apply_overrides(get_preset("tiny"), {"data.n_train": 64, "data.n_test": 8, "data.n_select": 4,
                                              "pretrain.passages": 64, "pretrain.epochs": 6, "pretrain.lr": 1e-2,
                                              "pretrain.reconstruction_ratio": 0.5, "pretrain.target_tokens": 8})
    metrics = train(cfg, tmp_path / "run", lm=tiny, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "pretrain_history.jsonl").read_text().splitlines()]
    assert rows and all(r["kind"] == "pretrain" for r in rows)
    first, last = rows[:4], rows[-4:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    assert mean(last, "loss_total") < mean(first, "loss_total") - 0.2  # nats; a 4-slot random tiny model
    assert {"loss_reconstruction", "loss_continuation"} <= set().union(*rows)
    assert 0 < metrics["pretrain_rows"] <= 64 and 0 < metrics["pretrain_reconstruction"] < metrics["pretrain_rows"]
    assert metrics["pretrain_steps"] == len(rows)
    assert (tmp_path / "run" / "checkpoints" / "pretrained.safetensors").is_file()


PRETRAIN_SETTINGS = {"data.n_train": 32, "data.n_test": 8, "data.n_select": 4, "pretrain.passages": 32,
                     "pretrain.epochs": 2, "pretrain.target_tokens": 6, "train.save_every": 1}


def _history(run, name: str) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / name).read_text().splitlines()]


def _interrupt_at(monkeypatch, module, name: str, call: int) -> None:
    """Make ``module.name`` raise KeyboardInterrupt at its ``call``-th call (a run killed there)."""
    real, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapped)


ENCODER = {"compressor.kind": "encoder", "compressor.encoder_layers": 1, "compressor.m": 4, "pretrain.m": 2}


@pytest.mark.parametrize("where", ["pretrain", "train", "encoder pretrain"])
def test_resume_inside_either_stage_equals_the_uninterrupted_run(tmp_path, tiny, monkeypatch, where):
    """Pretraining runs in the one training loop: a run stopped in pretraining resumes there; one stopped in
    fine-tuning resumes there without redoing pretraining; both end exactly like the uninterrupted run (also
    for an LM-encoder compressor pretrained at another M)."""
    import seqcomp.pretrain
    import seqcomp.trainer

    cfg = apply_overrides(get_preset("tiny"), {**PRETRAIN_SETTINGS, **(ENCODER if "encoder" in where else {})})
    full = train(cfg, tmp_path / "full", lm=tiny, progress=False)
    with monkeypatch.context() as patch:
        if where.endswith("pretrain"):  # 32 passages, batch 8, 2 epochs: stop in the middle of the second epoch
            _interrupt_at(patch, seqcomp.pretrain, "pretrain_batch_loss", 6)
        else:
            _interrupt_at(patch, seqcomp.trainer, "step_losses", 3)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path / "cut", lm=tiny, progress=False)
    if where == "train":  # fine-tuning resumes without running pretraining again
        _interrupt_at(monkeypatch, seqcomp.pretrain, "pretrain_batch_loss", 1)
    resumed = train(cfg, tmp_path / "cut", lm=tiny, progress=False, resume=True)
    for name in ("pretrain_history.jsonl", "history.jsonl"):
        assert _history(tmp_path / "cut", name) == _history(tmp_path / "full", name)
    same = lambda m: {k: v for k, v in m.items() if k != "train_seconds"}  # noqa: E731
    assert same(resumed) == same(full)


def test_pretraining_prefixes_come_from_the_one_layout_function_with_a_task_vector_each(tiny):
    from seqcomp.layout import build_prefix
    from seqcomp.pretrain import CONTINUE, RECONSTRUCT, PretrainRow, pretrain_batch_loss, pretrain_prefixes

    cfg = apply_overrides(get_preset("tiny"), {"pretrain.passages": 4, "compressor.kind": "pool", "pretrain.m": 2})
    system = CompressionSystem(cfg, tiny)
    rows = [PretrainRow(RECONSTRUCT, "The key is red.", (5, 6)), PretrainRow(CONTINUE, "The key is", (7,))]
    prefixes = pretrain_prefixes(tiny, system, rows, cfg)
    for prefix, row in zip(prefixes, rows):
        assert [s.name for s in prefix] == ["compressed", "task", "bos"]
        assert prefix[0].vectors.shape[0] == 2  # pretrain.m slots, not compressor.m
        assert prefix[1].vectors is system.task_vectors[row.task]
        layout = dataclasses.replace(cfg.layout, question_as_text=False, anchor="")
        assert [s.name for s in build_prefix(tiny.tokenizer, layout, prefix[:2], "")] == [s.name for s in prefix]
    parts = pretrain_batch_loss(tiny, system, rows, cfg)
    parts["total"].backward()
    assert all(system.task_vectors[t].grad is not None for t in (RECONSTRUCT, CONTINUE))
    assert system.soft_anchor is None or system.soft_anchor.grad is None
    # fine-tuning never updates the task vectors
    assert not any(p is system.task_vectors[RECONSTRUCT] for p in system.trainable_parameters())


def test_pretraining_at_another_m_only_for_pool_and_encoder(tmp_path, tiny):
    cfg = apply_overrides(get_preset("tiny"), {**PRETRAIN_SETTINGS, "pretrain.m": 2})  # tiny: a query compressor
    with pytest.raises(ValueError, match="pretrain.m=2: compressor.kind 'query'"):
        train(cfg, tmp_path / "run", lm=tiny, progress=False)
