"""Batched generation equals one-at-a-time; embedding replay equals the text path; stopping works."""

from __future__ import annotations

import torch

from seqcomp.baselines import baseline_prefix
from seqcomp.config import GenerationConfig, LayoutConfig
from seqcomp.evaluate import predict, score
from seqcomp.generation import generate, stop_ids
from seqcomp.layout import build_lm_input


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


def test_greedy_loop_equals_transformers_generate_while_rows_leave_the_batch(tiny, examples):
    """The decode loop is transformers' greedy search token for token, including when finished rows are pruned."""
    exs = examples * 3  # 15 rows: enough that finished rows are pruned several times
    prefixes = [baseline_prefix("text", tiny.tokenizer, e, budget=2 + i % 7) for i, e in enumerate(exs)]
    batch = build_lm_input(tiny.embed, prefixes, pad_id=tiny.pad_id)

    def reference(extra_stops):
        out = tiny.model.generate(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                                  max_new_tokens=12, do_sample=False, eos_token_id=stop_ids(tiny, extra_stops),
                                  pad_token_id=tiny.pad_id)
        return out.tolist()

    # stop tokens the random model emits at different steps in different rows (the i-th row's token at step 1 + 3i)
    free = reference(())
    extra = tuple(sorted({row[1 + 3 * i] for i, row in enumerate(free[:3])}))
    gens = generate(tiny, batch, max_new_tokens=12, end_of_answer_ids=extra)
    expected = reference(extra)
    stops = set(stop_ids(tiny, extra))
    for g, row in zip(gens, expected):
        ids = []
        for t in row:
            ids.append(t)
            if t in stops:
                break
        assert g.token_ids == ids
    lengths = {len(g.token_ids) for g in gens}
    assert len(lengths) >= 3 and min(lengths) < 12  # rows really left the batch at different steps
