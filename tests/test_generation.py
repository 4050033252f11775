"""Batched generation equals one-at-a-time; embedding replay equals the text path; stopping works."""

from __future__ import annotations

import dataclasses

import torch

from seqcomp.baselines import baseline_prefix
from seqcomp.config import GenerationConfig, LayoutConfig
from seqcomp.evaluate import _left_pad_ids, predict, score
from seqcomp.generation import generate, stop_ids
from seqcomp.layout import build_lm_input, build_prefix, split_shared_heads
from seqcomp.prompts import Segment, text_ids


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


def test_shared_heads_generate_what_whole_rows_generate(tiny):
    """Reading a shared head once and copying its KV cache to its rows equals generating from the whole rows."""
    torch.manual_seed(0)
    layout = LayoutConfig()
    questions = ["What is the key?", "Where is it?", "Who built the church near the school?", "Why?"]
    vector_heads = [[Segment("compressed", vectors=torch.randn(4, tiny.hidden_size) * tiny.embedding_rms)]
                    for _ in range(3)]
    text_heads = [[Segment("context", ids=text_ids(tiny.tokenizer, t))]
                  for t in ("The key is red.", "In 1000 the king built a church near the school and a war school.")]
    for heads in (vector_heads, text_heads):
        # several questions on each head, one head alone, rows not grouped by head
        rows = [(h, q) for q in questions[:3] for h in heads[:2]] + [(heads[-1], questions[3])]
        prefixes = [build_prefix(tiny.tokenizer, layout, h, q) for h, q in rows]
        shared = split_shared_heads(tiny.embed, prefixes, pad_id=tiny.pad_id)
        assert shared is not None and shared.heads.inputs_embeds.shape[0] == len(heads)
        whole = generate(tiny, build_lm_input(tiny.embed, prefixes, pad_id=tiny.pad_id), max_new_tokens=8)
        split = generate(tiny, shared, max_new_tokens=8)
        assert [g.token_ids for g in split] == [g.token_ids for g in whole]
        for a, b in zip(split, whole):
            torch.testing.assert_close(torch.tensor(a.token_logprobs), torch.tensor(b.token_logprobs), atol=1e-4, rtol=0)
            assert [t for t, _ in a.first_top5] == [t for t, _ in b.first_top5]


def test_prefixes_that_share_nothing_are_not_split(tiny, examples):
    prefixes = [baseline_prefix("text", tiny.tokenizer, e, budget=8) for e in examples]
    assert split_shared_heads(tiny.embed, prefixes, pad_id=tiny.pad_id) is None


def test_fewshot_prompts_read_their_shots_once_and_generate_as_from_token_ids(tiny, examples):
    prefixes = [baseline_prefix("fewshot", tiny.tokenizer, e, shots=examples[:2]) for e in examples]
    shared = split_shared_heads(tiny.embed, prefixes, pad_id=tiny.pad_id)
    assert shared is not None and shared.heads.inputs_embeds.shape[0] == 1  # the shots, once for the batch
    ids, mask = _left_pad_ids(prefixes, tiny.pad_id, tiny.device)
    from_ids = generate(tiny, input_ids=ids, attention_mask=mask, max_new_tokens=8)
    assert [g.token_ids for g in generate(tiny, shared, max_new_tokens=8)] == [g.token_ids for g in from_ids]
    gens = predict(tiny, examples, lambda exs: [baseline_prefix("fewshot", tiny.tokenizer, e, shots=examples[:2])
                                                for e in exs], GenerationConfig(8, 5), LayoutConfig(),
                   via_input_ids=True, progress=False)
    assert [g.token_ids for g in gens] == [g.token_ids for g in from_ids]


def test_each_prefix_shares_its_longest_common_head(tiny, examples):
    """Kept-context prompts all start with `Context:`, but only a passage's own questions share its text."""
    passages = [examples[0], examples[1]]
    rows = [dataclasses.replace(p, question=q) for p in passages for q in ("What is it?", "Where?", "Why?")]
    rows.append(examples[2])  # a passage with one question: its head shares only the label
    prefixes = [baseline_prefix("truncate", tiny.tokenizer, e, budget=6) for e in rows]
    shared = split_shared_heads(tiny.embed, prefixes, pad_id=tiny.pad_id)
    assert shared.head_of.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert [n for _, n in shared.heads.segments[0]] == [len(prefixes[0][0]), 6]  # label + kept passage tokens
    assert [name for name, _ in shared.heads.segments[2]] == ["context-label"]
    ids, mask = _left_pad_ids(prefixes, tiny.pad_id, tiny.device)
    from_ids = generate(tiny, input_ids=ids, attention_mask=mask, max_new_tokens=8)
    assert [g.token_ids for g in generate(tiny, shared, max_new_tokens=8)] == [g.token_ids for g in from_ids]
