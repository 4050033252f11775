"""The trainable encoder (a copy of the LM's first layers) and dense distillation from the full-text teacher."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from seqcomp.cli import main
from seqcomp.config import ConfigError, apply_overrides
from seqcomp.layout import Segment, build_lm_input
from seqcomp.losses import AnswerLogits, answer_logits, dense_kd_loss, post_head_lengths
from seqcomp.lm import load_lm
from seqcomp.presets import get_preset
from seqcomp.sources import source_ids
from seqcomp.system import CompressionSystem
from seqcomp.trainer import step_losses, train

ENCODER = {"compressor.kind": "encoder", "compressor.encoder_layers": 1}
SHORT_RUN = {"data.n_train": 16, "data.n_select": 2, "data.n_test": 4}


def encoder_config(**overrides):
    return apply_overrides(get_preset("tiny"), {**ENCODER, **overrides})


def test_slots_have_the_shape_and_the_embedding_scale(tiny, examples):
    slots = CompressionSystem(encoder_config(), tiny).compress(tiny, examples)
    assert slots.shape == (len(examples), 4, tiny.hidden_size) and slots.dtype == torch.float32
    assert float(slots.detach().pow(2).mean().sqrt()) == pytest.approx(tiny.embedding_rms, rel=1e-3)


def test_the_copy_starts_equal_to_the_lm_in_fp32_and_shares_nothing_with_it():
    lm = load_lm("tiny", "bf16")  # the frozen LM stored in bf16, as for SmolLM2
    encoder = CompressionSystem(encoder_config(**{"model.precision": "bf16"}), lm).compressor
    base = lm.model.model
    pairs = [(encoder.embed_tokens, base.embed_tokens), (encoder.layers[0], base.layers[0])]
    for copy, frozen in pairs:
        for (name, p), (_, q) in zip(copy.named_parameters(), frozen.named_parameters(), strict=True):
            assert p.dtype == torch.float32 and q.dtype == torch.bfloat16, name
            assert torch.equal(p, q.float()) and p.data_ptr() != q.data_ptr(), name
            assert p.requires_grad and not q.requires_grad, name
    assert len(encoder.layers) == 1
    ids, mask, _ = source_ids(lm, [_example("The key is red.")], encoder.cfg, 64)
    assert encoder(ids, mask, lm.autocast()).dtype == torch.float32


def test_gradient_reaches_every_encoder_weight_and_no_frozen_one(tiny, examples):
    system = CompressionSystem(encoder_config(**{"loss.dense_kd_weight": 1.0}), tiny)
    step_losses(tiny, system, examples, system.config)["total"].backward()
    assert all(p.grad is None and not p.requires_grad for p in tiny.model.parameters())
    no_grad = [n for n, p in system.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad
    assert {n.split(".")[0] for n, _ in system.named_parameters()} == {"compressor", "soft_anchor"}


def _example(context: str):
    from conftest import make_example

    return make_example(0, context, "What is the key?", ("red",))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_token_0_sees_later_tokens_only_when_bidirectional(tiny, bidirectional):
    encoder = CompressionSystem(encoder_config(**{"compressor.bidirectional": bidirectional}), tiny).compressor
    ids, mask, _ = source_ids(tiny, [_example("The key is red. The river runs to the city.")], encoder.cfg, 64)
    changed = ids.clone()
    changed[0, 3] = (changed[0, 3] + 1) % len(tiny.tokenizer)
    with torch.no_grad():
        a, b = encoder.encode(ids, mask), encoder.encode(changed, mask)
    assert torch.equal(a[0, :3], b[0, :3]) != bidirectional
    assert not torch.equal(a[0, 3:], b[0, 3:])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_does_not_change_a_rows_slots(tiny, bidirectional):
    system = CompressionSystem(encoder_config(**{"compressor.bidirectional": bidirectional}), tiny)
    short, long = _example("The key is red."), _example("Music was played at the war school near the river.")
    with torch.no_grad():
        alone, padded = system.compress(tiny, [short]), system.compress(tiny, [short, long])
    torch.testing.assert_close(alone[0], padded[0])


def test_training_leaves_the_frozen_lm_bit_identical_and_moves_the_encoder(tmp_path, tiny):
    frozen = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    run = tmp_path / "run"
    train(encoder_config(**SHORT_RUN), run, lm=tiny, progress=False)
    assert all(torch.equal(v, frozen[k]) for k, v in tiny.model.state_dict().items())
    from safetensors.torch import load_file

    saved = load_file(str(run / "checkpoints" / "last.safetensors"))
    layer = {k[len("compressor.layers.0."):]: v for k, v in saved.items() if k.startswith("compressor.layers.0.")}
    assert layer.keys() == tiny.model.model.layers[0].state_dict().keys()
    assert not torch.equal(layer["self_attn.q_proj.weight"], frozen["model.layers.0.self_attn.q_proj.weight"])
    assert not any(k.startswith(("model.", "lm_head")) for k in saved)  # the frozen LM is never saved


def test_resume_with_an_encoder_equals_the_uninterrupted_run(tmp_path, tiny, monkeypatch):
    cfg = encoder_config(**SHORT_RUN, **{"train.epochs": 2, "train.save_every": 1})  # 4 steps
    train(cfg, tmp_path / "full", lm=tiny, progress=False)
    calls = {"n": 0}

    def stop_at_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed mid-run")
        return step_losses(*args, **kwargs)

    killed = tmp_path / "killed"
    monkeypatch.setattr("seqcomp.trainer.step_losses", stop_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, killed, lm=tiny, progress=False)
    monkeypatch.setattr("seqcomp.trainer.step_losses", step_losses)
    train(cfg, killed, lm=tiny, progress=False, resume=True)

    def train_rows(run):
        rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows if r["kind"] == "train"]

    assert [r["step"] for r in train_rows(killed)] == [1, 2, 3, 4]
    assert train_rows(killed) == train_rows(tmp_path / "full")
    for tag in ("best", "last"):
        assert (killed / "checkpoints" / f"{tag}.safetensors").read_bytes() == \
            (tmp_path / "full" / "checkpoints" / f"{tag}.safetensors").read_bytes()


def test_bad_encoder_settings_get_clear_errors(tiny):
    with pytest.raises(ConfigError, match="compressor.encoder_layers"):
        encoder_config(**{"compressor.encoder_layers": 0})
    with pytest.raises(ConfigError, match="compressor.bidirectional"):
        apply_overrides(get_preset("tiny"), {"compressor.bidirectional": True})
    with pytest.raises(ValueError, match="encoder_layers=3 but the model has 2 layers"):
        CompressionSystem(encoder_config(**{"compressor.encoder_layers": 3}), tiny)


def test_doctor_passes_the_tiny_preset_with_an_encoder(capsys):
    assert main(["doctor", "--preset", "tiny", "--set", "compressor.kind=encoder",
                 "--set", "compressor.encoder_layers=1"]) == 0, capsys.readouterr().out


# --- dense distillation -------------------------------------------------------------------------------


def test_dense_kd_is_zero_when_the_student_reads_what_the_teacher_reads(tiny, examples):
    text = apply_overrides(get_preset("tiny"), {"compressor.kind": "text", "loss.dense_kd_weight": 1.0})
    parts = {k: float(v.detach()) for k, v in step_losses(tiny, CompressionSystem(text, tiny), examples, text).items()}
    assert parts["dense_kd"] == pytest.approx(0.0, abs=1e-6)
    encoder = encoder_config(**{"loss.dense_kd_weight": 1.0})
    parts = {k: float(v.detach()) for k, v in step_losses(tiny, CompressionSystem(encoder, tiny), examples,
                                                          encoder).items()}
    assert parts["dense_kd"] > 1e-3
    assert parts["total"] == pytest.approx(parts["ce"] + parts["dense_kd"], rel=1e-6)


def hand_built_batch(tiny):
    """Row 0: a 3-vector head, BOS, 2 question tokens, 1 anchor token, 2 answer tokens (6 after the head);
    row 1: a 5-token text head, 3 question tokens, a trained anchor vector, 1 answer token (5 after the head)."""
    d = tiny.hidden_size
    prefixes = [[Segment("compressed", vectors=torch.randn(3, d) * 0.1), Segment("bos", ids=(1,)),
                 Segment("question", ids=(20, 21)), Segment("anchor", ids=(30,))],
                [Segment("context", ids=(40, 41, 42, 43, 44)), Segment("question", ids=(20, 21, 22)),
                 Segment("anchor", vectors=torch.randn(1, d) * 0.1)]]
    return build_lm_input(tiny.embed, prefixes, [[50, 51], [52]], pad_id=tiny.pad_id)


def test_dense_kd_reads_exactly_the_tokens_after_the_head(tiny):
    torch.manual_seed(0)
    batch = hand_built_batch(tiny)
    assert batch.width == 10 and post_head_lengths(batch) == [6, 5]
    al = answer_logits(tiny, batch, dense=True)
    with torch.no_grad():
        full = tiny.model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids).logits
    assert al.tail.shape == (2, 6, full.shape[-1]) and al.tail_lengths == [6, 5]
    torch.testing.assert_close(al.tail, full[:, -6:].float())

    # a 3-row case with different lengths: only each row's own last columns count
    v, lengths = 7, [2, 4, 1]
    teacher = AnswerLogits(torch.zeros(3, 1, v), torch.zeros(3, 1, dtype=torch.long), torch.randn(3, 4, v), lengths)
    for row, col, counts in ((0, 1, False), (0, 2, True), (1, 0, True), (2, 2, False), (2, 3, True)):
        student = dataclasses.replace(teacher, tail=teacher.tail.clone())
        student.tail[row, col] += torch.randn(v)
        assert (float(dense_kd_loss(student, teacher, 1.0)) > 1e-4) == counts, (row, col)
    with pytest.raises(ValueError, match="differ after the head"):
        dense_kd_loss(teacher, dataclasses.replace(teacher, tail_lengths=[2, 4, 2]), 1.0)
