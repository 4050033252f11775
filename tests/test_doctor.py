"""Every doctor check passes on the fixed setup and fails on a deliberately broken one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from seqcomp import doctor
from seqcomp.config import GenerationConfig, LayoutConfig, apply_overrides
from seqcomp.presets import get_preset
from seqcomp.slices import Slices


def tiny_config(preset: str):
    """A preset with the tiny model and tiny slots/width, keeping what the preset says about the layout."""
    cfg = get_preset(preset)
    return apply_overrides(cfg, {"model.name": "tiny", "model.precision": "fp32", "compressor.m": 4,
                                 "compressor.width": 32, "compressor.source_layer": 1, "compressor.encoder_layers": 1})


@pytest.fixture()
def slices(examples):
    return Slices(train=tuple(examples), select=tuple(examples[:2]), test=tuple(examples[2:]), source="test")


def by_name(checks):
    return {c.name: c for c in checks}


def test_tier1_tier2_and_best_pass_every_check(tiny, slices):
    for preset in ("tier1", "tier2", "best"):
        checks = doctor.run_doctor(tiny_config(preset), tiny, slices)
        assert all(c.passed for c in checks), doctor.format_checks(checks)


def test_best_is_tier1_with_the_chosen_ablation_variant():
    from seqcomp.presets import ABLATIONS, BEST_VARIANT

    best = get_preset("best")
    assert best == apply_overrides(dataclasses.replace(get_preset("tier1"), name="best"), ABLATIONS[BEST_VARIANT])
    assert best != dataclasses.replace(get_preset("tier1"), name="best")  # the variant changes something


def test_seed_experiment_fails_exactly_the_checks_it_violates(tiny, examples):
    cfg = tiny_config("seed-experiment-1")
    long = "because the king was red and the river ran to the city of 100 churches near the school"
    long_answer = dataclasses.replace(examples[4], context=f"Why is the key red? {long}.", answers=(long,))
    test = (*examples[2:4], long_answer)  # an answer longer than the diagnosed 12 new tokens
    broken_slices = Slices(train=tuple(examples), select=test, test=test, source="t")
    checks = by_name(doctor.run_doctor(cfg, tiny, broken_slices))
    failed = {name for name, c in checks.items() if not c.passed}
    assert failed == {"generation length", "answer anchor", "compressed RMS ~ embedding RMS",
                      "end-of-answer token trained", "selection slice disjoint from test slice"}
    for name in failed:
        assert checks[name].cause and checks[name].fix


def test_generation_length_check(tiny, slices):
    cfg = tiny_config("tier1")
    assert doctor.check_generation_length(cfg, tiny, slices).passed
    short = dataclasses.replace(cfg, generation=GenerationConfig(max_new_tokens=2))
    assert not doctor.check_generation_length(short, tiny, slices).passed


def test_prefix_check_catches_a_bos_only_in_training(tiny, slices, monkeypatch):
    cfg = tiny_config("tier1")
    from seqcomp.system import CompressionSystem

    system = CompressionSystem(cfg, tiny)
    assert doctor.check_prefix_identical(cfg, tiny, system, list(slices.test)).passed
    real = doctor.build_lm_input

    def bos_in_training_only(embed, prefixes, answers=None, pad_id=0):  # bug B2
        if answers is not None:
            prefixes = [list(p) + [doctor.Segment("bos", ids=(tiny.tokenizer.bos_token_id,))] for p in prefixes]
        return real(embed, prefixes, answers, pad_id)

    monkeypatch.setattr(doctor, "build_lm_input", bos_in_training_only)
    assert not doctor.check_prefix_identical(cfg, tiny, system, list(slices.test)).passed


def test_double_shift_check_fails_when_labels_are_shifted_by_hand(tiny, slices, monkeypatch):
    cfg = tiny_config("tier1")
    assert doctor.check_labels_not_double_shifted(cfg, tiny, list(slices.test)).passed
    real = doctor.build_lm_input

    def shifted(embed, prefixes, answers=None, pad_id=0):  # bug B1
        batch = real(embed, prefixes, answers, pad_id)
        if batch.labels is not None:
            labels = torch.full_like(batch.labels, -100)
            labels[:, :-1] = batch.labels[:, 1:]
            batch.labels = labels
            batch.answer_lengths = [n - 1 for n in batch.answer_lengths]
        return batch

    monkeypatch.setattr(doctor, "build_lm_input", shifted)
    assert not doctor.check_labels_not_double_shifted(cfg, tiny, list(slices.test)).passed


def test_padding_check_catches_right_padding(tiny, slices, monkeypatch):
    cfg = tiny_config("tier1")
    from seqcomp.system import CompressionSystem

    system = CompressionSystem(cfg, tiny)
    assert doctor.check_padding(cfg, tiny, system, list(slices.test)).passed
    real = doctor.build_lm_input

    def right_padded(embed, prefixes, answers=None, pad_id=0):  # bug B4
        batch = real(embed, prefixes, answers, pad_id)
        batch.attention_mask = batch.attention_mask.flip(-1)
        return batch

    monkeypatch.setattr(doctor, "build_lm_input", right_padded)
    assert not doctor.check_padding(cfg, tiny, system, list(slices.test)).passed


def test_rms_anchor_eoa_and_slices_checks(tiny, slices, examples):
    from seqcomp.system import CompressionSystem

    cfg = tiny_config("tier1")
    ex = list(slices.test)
    assert doctor.check_compressed_rms(cfg, tiny, CompressionSystem(cfg, tiny), ex).passed
    loud = dataclasses.replace(cfg, compressor=dataclasses.replace(cfg.compressor, calibrate=False))
    assert not doctor.check_compressed_rms(loud, tiny, CompressionSystem(loud, tiny), ex).passed
    assert doctor.check_answer_anchor(cfg).passed
    assert not doctor.check_answer_anchor(dataclasses.replace(cfg, layout=LayoutConfig(anchor="", bos=False))).passed
    assert doctor.check_end_of_answer(cfg, tiny, ex).passed
    no_eoa = dataclasses.replace(cfg, layout=dataclasses.replace(cfg.layout, end_of_answer=""))
    assert not doctor.check_end_of_answer(no_eoa, tiny, ex).passed
    assert doctor.check_slices_disjoint(slices).passed
    assert not doctor.check_slices_disjoint(dataclasses.replace(slices, select=slices.test)).passed


def test_truncation_and_gold_leak_checks(tiny, slices, monkeypatch):
    from seqcomp.system import CompressionSystem

    cfg = tiny_config("tier1")
    ex = list(slices.test)
    assert doctor.check_truncation_keeps_question(tiny, ex, 4).passed
    system = CompressionSystem(cfg, tiny)
    assert doctor.check_no_gold_leak(cfg, tiny, system, ex).passed
    real = system.prefixes

    def leaky(lm, exs):  # bug B6: the gold answer length reaches the prefix
        return [p + [doctor.Segment("leak", ids=(1,) * len(e.answers[0]))] for p, e in zip(real(lm, exs), exs)]

    monkeypatch.setattr(system, "prefixes", leaky)
    assert not doctor.check_no_gold_leak(cfg, tiny, system, ex).passed
