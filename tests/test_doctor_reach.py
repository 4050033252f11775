"""The reach checks (issue 16): each fails on a config built to hide the question or cut the passage, and every
preset passes them."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import SHARED_SQUAD, real_squad_available
from seqcomp import doctor, doctor_reach
from seqcomp.cli import main
from seqcomp.config import apply_overrides
from seqcomp.presets import PRESETS
from seqcomp.slices import Slices, load_slices
from seqcomp.system import CompressionSystem
from test_doctor import tiny_config

REACH = ("layout text survives the tokenizer", "question reaches the LM", "compressor reads more than truncation keeps",
         "gold answer inside what the LM sees", "LM input fits the context window")


@pytest.fixture()
def slices(examples):
    select = tuple(dataclasses.replace(e, id=f"select-{e.id}") for e in examples[:2])
    return Slices(train=tuple(examples), select=select, test=tuple(examples), source="test")


def reach(cfg, lm, slices) -> dict[str, doctor.Check]:
    checks = doctor_reach.reach_checks(cfg, lm, CompressionSystem(cfg, lm), slices)
    return {c.name: c for c in checks}


def failed(cfg, lm, slices) -> set[str]:
    return {name for name, c in reach(cfg, lm, slices).items() if not c.passed}


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "seed-experiment-1"])
def test_every_preset_passes_every_check(tiny, slices, preset):
    cfg = tiny_config(preset)
    if preset == "tiny":  # its own synthetic rows: its 8 new tokens are sized for them
        slices = load_slices(dataclasses.replace(cfg.data, n_train=1))
    checks = doctor.run_doctor(cfg, tiny, slices)
    assert set(REACH) <= {c.name for c in checks}
    assert all(c.passed for c in checks), doctor.format_checks(checks)


def test_a_hidden_question_fails_for_every_kind(tiny, slices):
    for kind in ("query", "pool", "text", "truncate"):
        cfg = apply_overrides(tiny_config("tier1"), {"compressor.kind": kind, "layout.question_as_text": False})
        assert failed(cfg, tiny, slices) == {"question reaches the LM"}, kind
    # compressing the question reaches the LM through the slots, unless the source window cuts it off
    compressed = apply_overrides(tiny_config("tier1"), {"layout.question_as_text": False,
                                                        "compressor.compress_question": True})
    assert "question reaches the LM" not in failed(compressed, tiny, slices)
    cut = apply_overrides(compressed, {"data.max_source_tokens": 8})
    check = reach(cut, tiny, slices)["question reaches the LM"]
    # only row 4's question reaches, and only because its passage repeats it ("Why is the key red? Because ...")
    assert not check.passed and check.detail.startswith("1/5 questions") and check.cause and check.fix


def test_a_passage_cut_to_the_budget_is_not_compressed(tiny, slices):
    cfg = tiny_config("tier1")  # M = 4
    for window in (4, 2):
        cut = apply_overrides(cfg, {"data.max_source_tokens": window})
        assert {"compressor reads more than truncation keeps", "gold answer inside what the LM sees"} <= failed(
            cut, tiny, slices), window
    # a window above M but passages that all fit in M tokens: truncation keeps everything, nothing to compress
    assert failed(apply_overrides(cfg, {"compressor.m": 64}), tiny, slices) == {
        "compressor reads more than truncation keeps"}
    detail = reach(cfg, tiny, slices)["compressor reads more than truncation keeps"].detail
    assert "passages whole in the window 100.0% (5/5), in M tokens 0.0% (0/5)" in detail


def test_answer_coverage_threshold_is_stated_and_settable(tiny, slices):
    cut = apply_overrides(tiny_config("tier1"), {"data.max_source_tokens": 5})
    check = reach(cut, tiny, slices)["gold answer inside what the LM sees"]
    assert not check.passed and "required >= 95% (data.min_answer_coverage)" in check.detail
    assert reach(apply_overrides(cut, {"data.min_answer_coverage": 0.0}), tiny, slices)[
        "gold answer inside what the LM sees"].passed
    # a baseline at the budget reports its share and the truncation baseline's, whatever the threshold
    truncate = apply_overrides(tiny_config("truncate-trained"), {"compressor.m": 1, "data.min_answer_coverage": 1.0})
    check = reach(truncate, tiny, slices)["gold answer inside what the LM sees"]
    assert check.passed and "zero-shot truncation at M" in check.detail


def test_layout_text_the_tokenizer_drops_fails(tiny, slices):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {w for e in slices.test for w in f"Question: {e.question} Answer: Repeat the passage:".split()}
    vocab = {"<unk>": 0, ":": 1, "?": 2, **{w.strip(":?"): i + 3 for i, w in enumerate(sorted(words))}}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    lm = dataclasses.replace(tiny, tokenizer=PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>"))
    cfg = tiny_config("tier1")
    assert doctor_reach.check_layout_text_survives(cfg, lm, slices.test).passed
    for key, value in (("layout.anchor", "Réponse:"), ("layout.question_template", "Frage: {question}\n")):
        check = doctor_reach.check_layout_text_survives(apply_overrides(cfg, {key: value}), lm, slices.test)
        assert not check.passed and key in check.detail and "<unk>" in check.detail


def test_an_input_longer_than_the_lm_window_fails(tiny, slices, monkeypatch):
    cfg = tiny_config("text-ceiling")
    assert reach(cfg, tiny, slices)["LM input fits the context window"].passed
    monkeypatch.setattr(tiny.model.config, "max_position_embeddings", 40)
    assert failed(cfg, tiny, slices) == {"LM input fits the context window"}
    kd_source = apply_overrides(tiny_config("tier2"), {"compressor.source": "hidden", "generation.max_new_tokens": 4})
    check = reach(kd_source, tiny, slices)["LM input fits the context window"]
    assert not check.passed and "KD teacher input" in check.cause and "generation input" not in check.cause


def test_a_kind_the_checks_do_not_know_fails_loudly(tiny, slices, monkeypatch):
    monkeypatch.setattr(doctor_reach, "KNOWN_KINDS", ("query", "text", "truncate"))
    checks = reach(tiny_config("best"), tiny, slices)  # kind "pool"
    assert {name for name, c in checks.items() if not c.passed} == set(REACH) - {"layout text survives the tokenizer"}
    assert all("'pool' is unknown" in c.detail for c in checks.values() if not c.passed)


@pytest.mark.parametrize("override, check", [("layout.question_as_text=false", "question reaches the LM"),
                                             ("data.max_source_tokens=4", "compressor reads more than truncation")])
def test_cli_refuses_a_hidden_question_and_a_cut_passage(capsys, override, check):
    assert main(["doctor", "--preset", "tiny"]) == 0
    capsys.readouterr()
    assert main(["doctor", "--preset", "tiny", "--set", override]) == 1
    assert f"[FAIL] {check}" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not real_squad_available(), reason=f"real SQuAD not found at {SHARED_SQUAD}")
def test_real_rows_measure_what_reaches_the_lm():
    from seqcomp.data import load_squad, subsample
    from seqcomp.lm import load_lm
    from seqcomp.presets import get_preset

    smol, rows = load_lm("smollm2-135m-instruct", "fp32"), tuple(subsample(load_squad(SHARED_SQUAD, "validation"),
                                                                           100, seed=3))
    real = Slices(train=rows[:1], select=rows[:4], test=rows, source="dev")
    for preset in ("tier1", "pool-hidden", "text-ceiling", "truncate-trained"):
        assert not failed(get_preset(preset), smol, real), preset
    cut = failed(apply_overrides(get_preset("tier1"), {"data.max_source_tokens": 32}), smol, real)
    assert cut == {"compressor reads more than truncation keeps", "gold answer inside what the LM sees"}
    hidden = failed(apply_overrides(get_preset("tier1"), {"layout.question_as_text": False}), smol, real)
    assert hidden == {"question reaches the LM"}
