"""Batched generation equals one-at-a-time; embedding replay equals the text path; stopping works."""

from __future__ import annotations

import torch

from seqcomp.baselines import baseline_prefix
from seqcomp.config import GenerationConfig, LayoutConfig
from seqcomp.evaluate import predict, score
from seqcomp.generation import stop_ids


def _prefix_fn(tiny, kind="text"):
    return lambda exs: [baseline_prefix(kind, tiny.tokenizer, e, budget=8) for e in exs]


def test_batched_generation_equals_one_at_a_time(tiny, examples):
    layout = LayoutConfig()
    batched = predict(tiny, examples, _prefix_fn(tiny), GenerationConfig(max_new_tokens=10, batch_size=5), layout,
                      progress=False)
    single = predict(tiny, examples, _prefix_fn(tiny), GenerationConfig(max_new_tokens=10, batch_size=1), layout,
                     progress=False)
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    for a, b in zip(batched, single):
        torch.testing.assert_close(torch.tensor(a.token_logprobs), torch.tensor(b.token_logprobs), atol=1e-4, rtol=0)


def test_embedding_replay_equals_text_exactly(tiny, examples):
    layout = LayoutConfig()
    gen = GenerationConfig(max_new_tokens=10, batch_size=3)
    text = predict(tiny, examples, _prefix_fn(tiny, "text"), gen, layout, via_input_ids=True, progress=False)
    replay = predict(tiny, examples, _prefix_fn(tiny, "replay"), gen, layout, via_input_ids=False, progress=False)
    assert [g.token_ids for g in text] == [g.token_ids for g in replay]
    assert [g.answer for g in text] == [g.answer for g in replay]


def test_generation_stops_at_newline_and_reports_first_step(tiny, examples):
    stops = set(stop_ids(tiny, ()))
    newline = tiny.tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    assert newline in stops
    gens = predict(tiny, examples, _prefix_fn(tiny), GenerationConfig(max_new_tokens=12, batch_size=5),
                   LayoutConfig(), progress=False)
    for g in gens:
        assert all(t not in stops for t in g.token_ids[:-1])  # only the last token may be a stop token
        assert len(g.first_top5) == 5 and abs(sum(p for _, p in g.first_top5)) <= 1.0 + 1e-6
        assert len(g.token_logprobs) == len(g.token_ids)
        assert "\n" not in g.answer


def test_score_records_carry_what_the_inspectors_need(tiny, examples):
    gens = predict(tiny, examples, _prefix_fn(tiny), GenerationConfig(max_new_tokens=6, batch_size=5),
                   LayoutConfig(), progress=False)
    records, summary = score(tiny, examples, gens, LayoutConfig())
    assert summary.n == len(examples)
    for r, ex in zip(records, examples):
        assert r["id"] == ex.id and r["golds"] == list(ex.answers)
        assert set(r) >= {"prediction", "em", "f1", "first_token", "first_top5", "tokens", "token_logprobs"}


def test_truncation_baseline_keeps_the_whole_question(tiny, examples):
    ex = examples[1]
    segs = baseline_prefix("truncate", tiny.tokenizer, ex, budget=3)
    text = tiny.tokenizer.decode([t for s in segs for t in s.ids])
    assert ex.question in text and len(segs[1].ids) == 3
