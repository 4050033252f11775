"""The one layout: unshifted labels, left padding, identical train/generation prefixes, loss invariant."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from seqcomp.config import LayoutConfig
from seqcomp.layout import (IGNORE, LayoutError, Segment, anchor_ids, answer_ids, build_lm_input, build_prefix,
                            end_of_answer_ids)
from seqcomp.losses import answer_ce, answer_logits
from seqcomp.prompts import context_prefix


def _prompt(tok, ex):
    return context_prefix(tok, ex, with_question=True)  # the zero-shot text prompt


def test_labels_sit_at_their_own_positions_and_rows_are_left_padded(tiny, examples):
    tok = tiny.tokenizer
    layout = LayoutConfig()
    prefixes = [_prompt(tok, e) for e in examples[:3]]
    answers = [answer_ids(tok, layout, e.answers[0], 32)[0] for e in examples[:3]]
    batch = build_lm_input(tiny.embed, prefixes, answers, pad_id=tiny.pad_id)
    eoa = end_of_answer_ids(tok, layout)[0]
    for row, ans in enumerate(answers):
        n = len(ans)
        assert batch.labels[row, -n:].tolist() == ans  # unshifted: label[t] is the token AT t
        assert batch.labels[row, -1].item() == eoa
        assert torch.all(batch.labels[row, :-n] == IGNORE)
        total = batch.prefix_lengths[row] + n
        assert batch.attention_mask[row, -total:].all() and not batch.attention_mask[row, :-total].any()
        assert batch.position_ids[row, -total:].tolist() == list(range(total))


def test_trainer_loss_on_text_prefix_equals_the_models_own_lm_loss(tiny, examples):
    """Bug B1 guard: our answer CE == HF's LM loss (which shifts labels itself) on the same tokens."""
    tok = tiny.tokenizer
    layout = LayoutConfig()
    for ex in examples[:3]:
        prompt = _prompt(tok, ex)
        ans = answer_ids(tok, layout, ex.answers[0], 32)[0]
        ours = answer_ce(answer_logits(tiny, build_lm_input(tiny.embed, [prompt], [ans], pad_id=tiny.pad_id)))
        ids = torch.tensor([list(prompt[0].ids) + ans])
        labels = torch.tensor([[IGNORE] * len(prompt[0].ids) + ans])
        reference = tiny.model(input_ids=ids, labels=labels).loss
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_padded_batch_loss_equals_mean_of_unpadded_rows(tiny, examples):
    tok = tiny.tokenizer
    layout = LayoutConfig()
    prefixes = [_prompt(tok, e) for e in examples]
    answers = [answer_ids(tok, layout, e.answers[0], 32)[0] for e in examples]
    batched = answer_logits(tiny, build_lm_input(tiny.embed, prefixes, answers, pad_id=tiny.pad_id))
    singles = [float(answer_ce(answer_logits(tiny, build_lm_input(tiny.embed, [p], [a], pad_id=tiny.pad_id))))
               for p, a in zip(prefixes, answers)]
    assert float(answer_ce(batched)) == pytest.approx(sum(singles) / len(singles), rel=1e-4)


def test_a_double_shift_would_be_detected(tiny, examples):
    """Shifting labels by hand (the diagnosed bug) changes the loss: the invariant above has teeth."""
    tok = tiny.tokenizer
    ex = examples[0]
    prompt = _prompt(tok, ex)
    ans = answer_ids(tok, LayoutConfig(), ex.answers[0] + " and more words", 32)[0]
    batch = build_lm_input(tiny.embed, [prompt], [ans], pad_id=tiny.pad_id)
    good = float(answer_ce(answer_logits(tiny, batch)))
    shifted = batch.labels.clone()
    shifted[:, :-1] = batch.labels[:, 1:]
    shifted[:, -1] = IGNORE
    broken = float(answer_ce(answer_logits(tiny, dataclasses.replace(batch, labels=shifted))))
    assert abs(good - broken) > 1e-3


def test_generation_prefix_equals_training_prefix(tiny, examples):
    tok = tiny.tokenizer
    layout = LayoutConfig()
    head = [Segment("compressed", vectors=torch.randn(4, tiny.hidden_size))]
    prefix = build_prefix(tok, layout, head, examples[0].question)
    ans = answer_ids(tok, layout, examples[0].answers[0], 32)[0]
    train = build_lm_input(tiny.embed, [prefix], [ans], pad_id=tiny.pad_id)
    gen = build_lm_input(tiny.embed, [prefix], None, pad_id=tiny.pad_id)
    n = gen.prefix_lengths[0]
    assert torch.equal(train.inputs_embeds[0, :n], gen.inputs_embeds[0, -n:])
    assert [s for s, _ in gen.segments[0]] == ["compressed", "bos", "question", "anchor"]
    assert [s for s, _ in train.segments[0]] == ["compressed", "bos", "question", "anchor", "answer"]


def test_untrained_soft_anchor_equals_anchor_tokens(tiny, examples):
    tok = tiny.tokenizer
    layout = LayoutConfig()
    ids = anchor_ids(tok, layout)
    soft = tiny.embed(torch.tensor(ids)).detach().clone()
    head = [Segment("compressed", vectors=torch.randn(2, tiny.hidden_size))]
    a = build_lm_input(tiny.embed, [build_prefix(tok, layout, head, "Why?", soft)], None, pad_id=tiny.pad_id)
    b = build_lm_input(tiny.embed, [build_prefix(tok, layout, head, "Why?", None)], None, pad_id=tiny.pad_id)
    assert torch.equal(a.inputs_embeds, b.inputs_embeds)


def test_layout_errors_are_clear(tiny):
    tok = tiny.tokenizer
    with pytest.raises(LayoutError, match="tokenizes to nothing"):
        anchor_ids(lambda text, add_special_tokens: {"input_ids": []}, LayoutConfig(anchor="Answer:"))
    with pytest.raises(LayoutError, match="one token"):
        end_of_answer_ids(tok, LayoutConfig(end_of_answer="END OF ANSWER"))
    with pytest.raises(LayoutError, match="exactly one"):
        Segment("x")


def test_whitespace_anchor_is_a_config_error():
    from seqcomp.config import ConfigError

    with pytest.raises(ConfigError, match="layout.anchor"):
        LayoutConfig(anchor="   ")


def test_answer_positions_point_at_the_tokens_before_each_answer_token(tiny, examples):
    tok = tiny.tokenizer
    prefixes = [_prompt(tok, e) for e in examples[:2]]
    answers = [[5, 6, 7], [8]]
    batch = build_lm_input(tiny.embed, prefixes, answers, pad_id=tiny.pad_id)
    pos = batch.answer_logit_positions()
    w = batch.width
    assert pos[0].tolist() == [w - 4, w - 3, w - 2]
    assert pos[1].tolist() == [w - 2, -1, -1]
