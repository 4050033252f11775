"""The setup doctor: every known train/eval mismatch of the diagnosed experiment, checked before a run.

Each check runs the real code paths (the layout, the loss, the system) on a few real examples rather
than reading config flags, so a regression in the code is caught as well as a bad config. The checks that
what the answer needs (question, passage, gold span) reaches the LM live in ``seqcomp.doctor_reach``.
"""

from __future__ import annotations

import dataclasses

import torch

from .baselines import baseline_prefix
from .checks import Check, format_checks  # noqa: F401  (format_checks re-exported: callers print doctor results)
from .config import ExperimentConfig
from .doctor_reach import reach_checks
from .answer_lengths import coverage_of, recommend_max_new_tokens
from .collapse import rms
from .layout import IGNORE, build_lm_input, end_of_answer_ids
from .lm import LM, full_precision
from .losses import answer_ce, answer_logits, answers_for
from .prompts import ANSWER_LABEL, Segment, answer_text_ids, context_prefix  # noqa: F401 (tests use doctor.Segment)
from .slices import Slices
from .system import CompressionSystem


def run_doctor(config: ExperimentConfig, lm: LM, slices: Slices, n_examples: int = 4) -> list[Check]:
    examples = list((slices.select or slices.test)[:n_examples])
    torch.manual_seed(config.train.seed)
    system = CompressionSystem(config, lm).to(lm.device).eval()
    return [
        check_generation_length(config, lm, slices),
        check_prefix_identical(config, lm, system, examples),
        check_answer_anchor(config),
        check_labels_not_double_shifted(config, lm, examples),
        check_compressed_rms(config, lm, system, examples),
        check_end_of_answer(config, lm, examples),
        check_padding(config, lm, system, examples),
        check_slices_disjoint(slices),
        check_truncation_keeps_question(lm, examples, config.compressor.m),
        check_no_gold_leak(config, lm, system, examples),
        *reach_checks(config, lm, system, slices),
    ]


def check_generation_length(config: ExperimentConfig, lm: LM, slices: Slices) -> Check:
    layout = config.layout
    lengths = [len(answer_text_ids(lm.tokenizer, layout, a)) for e in slices.test for a in e.answers]
    cover = coverage_of(lengths, config.generation.max_new_tokens)
    trained = config.data.max_answer_tokens + (1 if layout.end_of_answer else 0)
    ok = cover >= 0.99 and config.generation.max_new_tokens >= min(trained, max(lengths) + 1)
    return Check("generation length", ok,
                 f"max_new_tokens={config.generation.max_new_tokens} covers {100 * cover:.1f}% of "
                 f"{len(lengths)} gold answers (+end token); training answers up to {trained} tokens",
                 "answers longer than max_new_tokens are cut and scored wrong, and the model is trained on "
                 "longer answers than it may generate (diagnosis Issue 1)",
                 f"set generation.max_new_tokens={recommend_max_new_tokens(lengths)} (covers >= 99%) and keep "
                 "data.max_answer_tokens below it")


def _prefix_signature(batch, row: int, prefix_only: bool) -> tuple[list[tuple[str, int]], torch.Tensor]:
    n = batch.prefix_lengths[row]
    total = n + batch.answer_lengths[row]
    real = batch.inputs_embeds[row, batch.width - total:]
    segs = [s for s in batch.segments[row] if not (prefix_only and s[0] == "answer")]
    return segs, real[:n]


def check_prefix_identical(config: ExperimentConfig, lm: LM, system: CompressionSystem, examples) -> Check:
    with torch.no_grad():
        prefixes = system.prefixes(lm, examples)
        answers, _ = answers_for(lm, config, examples)
        train = build_lm_input(lm.embed, prefixes, answers, pad_id=lm.pad_id)
        gen = build_lm_input(lm.embed, system.prefixes(lm, examples), None, pad_id=lm.pad_id)
    problems = []
    for i in range(len(examples)):
        s_train, e_train = _prefix_signature(train, i, True)
        s_gen, e_gen = _prefix_signature(gen, i, True)
        if s_train != s_gen or not torch.equal(e_train, e_gen):
            problems.append(f"row {i}: train {s_train} vs generation {s_gen}")
    names = [n for n, _ in gen.segments[0]]
    if config.layout.anchor and "anchor" not in names:
        problems.append("configured anchor missing from the prefix")
    if config.layout.bos and "bos" not in names:
        problems.append("configured BOS missing from the prefix")
    layout_text = " + ".join(f"{n}({k})" for n, k in gen.segments[0])
    return Check("train prefix == generation prefix", not problems,
                 f"{len(examples)} rows compared value by value; prefix: {layout_text}"
                 + (f"; {problems[0]}" if problems else ""),
                 "training and generation see different prefixes (e.g. BOS from the answer's tokenization, B2)",
                 "build both with seqcomp.layout.build_lm_input from the same prefix segments")


def check_answer_anchor(config: ExperimentConfig) -> Check:
    ok = bool(config.layout.anchor) or config.layout.bos
    return Check("answer anchor", ok, f"anchor={config.layout.anchor!r}, bos={config.layout.bos}",
                 "nothing marks where the compressed context ends and the answer begins (diagnosis Issue 2)",
                 f"set layout.anchor={ANSWER_LABEL!r} (and layout.bos=true)")


def check_labels_not_double_shifted(config: ExperimentConfig, lm: LM, examples) -> Check:
    ex = examples[0]
    prefix = context_prefix(lm.tokenizer, ex, with_question=True)  # the zero-shot text prompt
    prompt = prefix[0].ids
    answers, _ = answers_for(lm, dataclasses.replace(config, layout=dataclasses.replace(
        config.layout, end_of_answer=config.layout.end_of_answer or "\n")), [ex])
    with torch.no_grad(), full_precision(lm):
        batch = build_lm_input(lm.embed, [prefix], answers, pad_id=lm.pad_id)
        ours = float(answer_ce(answer_logits(lm, batch)))
        ids = torch.tensor([list(prompt) + answers[0]], device=lm.device)
        labels = torch.tensor([[IGNORE] * len(prompt) + answers[0]], device=lm.device)
        reference = float(lm.model(input_ids=ids, labels=labels).loss)
    ok = abs(ours - reference) <= 1e-4 * max(1.0, abs(reference))
    return Check("labels not double-shifted", ok,
                 f"trainer loss {ours:.5f} vs the model's own LM loss {reference:.5f} on a text prompt",
                 "labels are shifted by hand and again inside the model, so each token is trained to predict the "
                 "one two ahead (B1)", "keep labels at their own positions; let the model shift them")


def check_compressed_rms(config: ExperimentConfig, lm: LM, system: CompressionSystem, examples) -> Check:
    if system.compressor is None:
        return Check("compressed RMS ~ embedding RMS", True, f"not applicable: '{config.compressor.kind}' reads text")
    with torch.no_grad():
        slots = system.compress(lm, examples)
    ratio = rms(slots) / lm.embedding_rms
    return Check("compressed RMS ~ embedding RMS", 0.5 <= ratio <= 2.0,
                 f"compressed RMS {rms(slots):.4f} vs token-embedding RMS {lm.embedding_rms:.4f} ({ratio:.1f}x)",
                 "compressed vectors at a different scale from token embeddings look like no token the LM "
                 "knows (B3: LayerNorm output ~95x too large)",
                 "set compressor.calibrate=true (RMS calibration with a learnable gain)")


def check_end_of_answer(config: ExperimentConfig, lm: LM, examples) -> Check:
    eoa = end_of_answer_ids(lm.tokenizer, config.layout)
    answers, _ = answers_for(lm, config, examples)
    ok = bool(eoa) and all(a and a[-1] == eoa[0] for a in answers)
    return Check("end-of-answer token trained", ok,
                 f"end_of_answer={config.layout.end_of_answer!r}; present at the end of "
                 f"{sum(bool(eoa) and a[-1] == eoa[0] for a in answers)}/{len(answers)} training label rows",
                 "the model never learns to stop (B4: pad = EOS masked out of the labels), so longer "
                 "generation lowers F1", "set layout.end_of_answer='\\n' (a single token, trained and stopped at)")


def check_padding(config: ExperimentConfig, lm: LM, system: CompressionSystem, examples) -> Check:
    with torch.no_grad():
        prefixes = system.prefixes(lm, examples)
        answers, _ = answers_for(lm, config, examples)
        batches = [build_lm_input(lm.embed, prefixes, answers, pad_id=lm.pad_id),
                   build_lm_input(lm.embed, prefixes, None, pad_id=lm.pad_id)]
    problems = []
    for b in batches:
        mask = b.attention_mask
        if not torch.all(mask[:, -1] == 1) or not torch.all(mask[:, 1:] >= mask[:, :-1]):
            problems.append("not left-padded")
        first = mask.argmax(-1)
        if not torch.all(b.position_ids.gather(1, first[:, None]) == 0):
            problems.append("positions do not start at 0 on the first real token")
        if b.labels is not None and torch.any((mask == 0) & (b.labels != IGNORE)):
            problems.append("labels on padding")
    return Check("attention mask and padding", not problems,
                 "training and generation batches both left-padded with masks and positions from the mask"
                 + (f"; {problems[0]}" if problems else ""),
                 "right padding in training and left padding in generation, or no masks (B4)",
                 "build every batch with seqcomp.layout.build_lm_input")


def check_slices_disjoint(slices: Slices) -> Check:
    overlap = {e.id for e in slices.select} & {e.id for e in slices.test}
    ok = bool(slices.select) and not overlap
    return Check("selection slice disjoint from test slice", ok,
                 f"{len(slices.select)} selection vs {len(slices.test)} test questions, {len(overlap)} shared",
                 "picking the best checkpoint on the reported questions inflates the reported score (B7)",
                 "set data.select_on_test=false and data.n_select > 0")


def check_truncation_keeps_question(lm: LM, examples, budget: int) -> Check:
    ex = examples[0]
    segs = baseline_prefix("truncate", lm.tokenizer, ex, budget)
    ids = [t for s in segs for t in s.ids]
    question = lm.tokenizer.decode(ids)
    ok = ex.question in question and len(segs[1].ids) <= budget
    return Check("truncation baseline keeps the question", ok,
                 f"budget {budget}: {len(segs[1].ids)} context tokens kept, question intact: {ex.question in question}",
                 "cutting 'Context ... Question' from the end always drops the question (B8)",
                 "spend the budget on the context only (seqcomp.prompts.kept_context_prefix)")


def check_no_gold_leak(config: ExperimentConfig, lm: LM, system: CompressionSystem, examples) -> Check:
    ex = examples[0]
    a = dataclasses.replace(ex, answers=("alpha",), answer_starts=(0,))
    b = dataclasses.replace(ex, answers=("a completely different and much longer gold answer",), answer_starts=(0,))
    with torch.no_grad():
        ea = build_lm_input(lm.embed, system.prefixes(lm, [a]), None, pad_id=lm.pad_id).inputs_embeds
        eb = build_lm_input(lm.embed, system.prefixes(lm, [b]), None, pad_id=lm.pad_id).inputs_embeds
    ok = ea.shape == eb.shape and torch.equal(ea, eb)
    return Check("no gold answer in the evaluation prefix", ok,
                 "two different gold answers give " + ("identical" if ok else "DIFFERENT") + " generation prefixes",
                 "information from the gold answer (e.g. its length) reaches the compressor or prefix (B6)",
                 "prefixes must depend on context and question only")
