"""Tests for seqcomp.metrics: SQuAD v1.1 EM/F1, answer cleaning, bootstrap CIs, prediction-file scoring."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.functional.text.squad import squad as tm_squad_functional
from torchmetrics.text import SQuAD as TMSQuAD

from seqcomp.metrics import (
    ScoreInputError,
    ScoreReport,
    Summary,
    bootstrap_ci,
    clean_answer,
    exact_match,
    f1,
    first_token_accuracy,
    load_predictions_file,
    normalize_answer,
    score_predictions,
    summarize,
)

# --------------------------------------------------------------------------- normalize_answer


@pytest.mark.parametrize("text, expected", [
    ("The", ""),
    ("a an the", ""),
    ("  A   the AN ", ""),
    ("The Eiffel Tower!", "eiffel tower"),
    ("U.S.A.", "usa"),
    ("rock'n'roll, (1976)", "rocknroll 1976"),
    ("the-end", "theend"),            # punctuation goes first, so the article is no longer a word
    ("theater another", "theater another"),  # articles only as whole words
    ("Café", "café"),
    ("NAÏVE  café", "naïve café"),
    ("a café", "café"),
    ("éthe", "éthe"),                 # \b is Unicode-aware: no word boundary inside "éthe"
    ("«Zürich»", "«zürich»"),         # only ASCII string.punctuation is removed (official behaviour)
    ("multiple   spaces\tand\nnewlines", "multiple spaces and newlines"),
    ("", ""),
    ("   ", ""),
    ("!!!", ""),
])
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


# --------------------------------------------------------------------------- exact_match / f1


def test_exact_match_and_f1_basic() -> None:
    assert exact_match("The Denver Broncos", ["Denver Broncos"]) == 1.0
    assert exact_match("Broncos", ["Denver Broncos", "Panthers"]) == 0.0
    assert f1("Broncos", ["Denver Broncos"]) == pytest.approx(2 / 3)
    assert f1("Denver Broncos", ["Panthers", "Denver Broncos"]) == 1.0
    assert f1("x y", ["z"]) == 0.0
    # multiset overlap: a repeated token counts once per occurrence in both
    assert f1("x b b", ["b b b c"]) == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))


def test_official_v11_empty_vs_empty() -> None:
    """The official v1.1 script gives F1 0 (num_same == 0) but EM 1 when both sides normalise to nothing."""
    assert exact_match("", [""]) == 1.0
    assert f1("", [""]) == 0.0
    assert exact_match("the", ["A"]) == 1.0
    assert f1("the", ["A"]) == 0.0
    assert f1("", ["Paris"]) == 0.0
    assert f1("Paris", [""]) == 0.0


def test_empty_golds_raise() -> None:
    with pytest.raises(ValueError, match="at least one gold"):
        exact_match("x", [])
    with pytest.raises(ValueError, match="at least one gold"):
        f1("x", [])
    with pytest.raises(TypeError, match="sequence of answer strings"):
        f1("x", "x")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20), st.lists(st.text(max_size=20), min_size=1, max_size=4))
def test_em_f1_pair_properties(prediction: str, golds: list[str]) -> None:
    em, score = exact_match(prediction, golds), f1(prediction, golds)
    assert em in (0.0, 1.0)
    assert 0.0 <= score <= 1.0
    if normalize_answer(prediction):
        assert em <= score           # an exact match of non-empty tokens has F1 exactly 1
    else:
        assert score == 0.0          # official v1.1: nothing shared -> 0, even empty vs empty (EM may be 1)


# --------------------------------------------------------------------------- agreement with torchmetrics

_WORDS = ["the", "The", "a", "A", "an", "An", "Paris", "paris", "France", "river", "Seine", "1976", "Denver",
          "Broncos", "Café", "café", "naïve", "Zürich", "Ærø", "日本", "theater", "another", "U.S.", "rock'n'roll"]
_PUNCT = ["", "", "", ",", ".", "!", "?", "'s", "(", ")", "-", "—", "«"]
_SPACES = [" ", " ", " ", "  ", "\t", " \n ", "-", "'", "."]  # joiners make "the-end": order of steps matters


def _phrase(rng: random.Random, words: list[str]) -> str:
    parts = []
    for w in words:
        if rng.random() < 0.3:
            w = rng.choice(_PUNCT) + w if rng.random() < 0.3 else w + rng.choice(_PUNCT)
        parts.append(w + rng.choice(_SPACES))
    return "".join(parts).strip() if rng.random() < 0.8 else " " + "".join(parts)


def _random_pair(rng: random.Random) -> tuple[str, list[str]]:
    gold_words = [rng.sample(_WORDS, rng.randint(1, 4)) for _ in range(rng.randint(1, 4))]
    golds = [_phrase(rng, ws) for ws in gold_words]
    if rng.random() < 0.1:
        golds[rng.randrange(len(golds))] = rng.choice(["the", "A", "an the", "The."])  # article-only gold
    kind = rng.random()
    if kind < 0.12:
        prediction = rng.choice(["", " ", "the", "."])                  # empty after normalisation
    elif kind < 0.35:
        prediction = rng.choice(golds)                                  # exact copy of a gold
    elif kind < 0.7:                                                    # overlapping tokens
        base = rng.choice(gold_words)
        extra = rng.sample(_WORDS, rng.randint(0, 3))
        prediction = _phrase(rng, rng.sample(base, rng.randint(1, len(base))) + extra)
    else:                                                               # arbitrary, often disjoint
        prediction = _phrase(rng, [rng.choice(_WORDS) for _ in range(rng.randint(1, 5))])
    return prediction, golds


def _pairs(n: int = 1200, seed: int = 1234) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    return [_random_pair(rng) for _ in range(n)]


def _v11_divergent(prediction: str, golds: list[str]) -> bool:
    """torchmetrics follows the SQuAD v2.0 rule (F1 = 1 when both token lists are empty); v1.1 gives 0."""
    return normalize_answer(prediction) == "" and any(normalize_answer(g) == "" for g in golds)


@pytest.fixture
def float64_default():
    # torchmetrics accumulates in the default float dtype (and SQuAD's states are float32); float32 loses
    # ~2e-6 percent over 1000 pairs, more than the 1e-6 tolerance, so the reference runs in float64.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _tm_inputs(pairs: list[tuple[str, list[str]]]) -> tuple[list[dict], list[dict]]:
    preds = [{"id": str(i), "prediction_text": p} for i, (p, _) in enumerate(pairs)]
    target = [{"id": str(i), "answers": {"text": g, "answer_start": [0] * len(g)}} for i, (_, g) in enumerate(pairs)]
    return preds, target


def test_generated_pairs_cover_edge_cases() -> None:
    pairs = _pairs()
    assert len(pairs) >= 1000
    assert sum(p == "" for p, _ in pairs) >= 10
    assert sum(_v11_divergent(p, g) for p, g in pairs) >= 3
    assert sum(normalize_answer(p) == "" and not _v11_divergent(p, g) for p, g in pairs) >= 10
    assert sum(any(normalize_answer(x) == "" for x in g) and normalize_answer(p) != "" for p, g in pairs) >= 10
    assert len({len(g) for _, g in pairs}) == 4
    ems, f1s = [exact_match(p, g) for p, g in pairs], [f1(p, g) for p, g in pairs]
    assert sum(ems) >= 100 and sum(0 < s < 1 for s in f1s) >= 100 and sum(s == 0 for s in f1s) >= 100
    assert any(any(c in p for c in "éïüÆ日") for p, _ in pairs)
    # article glued to a word by punctuation: removing articles before punctuation would change these
    assert sum(normalize_answer(p) != " ".join(normalize_answer(p.replace("-", " - ")).split())
               for p, _ in pairs) >= 10


def test_agrees_with_torchmetrics_per_pair(float64_default) -> None:
    pairs = _pairs()
    preds, target = _tm_inputs(pairs)
    n_divergent = 0
    for (prediction, golds), pred, tgt in zip(pairs, preds, target):
        ref = tm_squad_functional(pred, tgt)
        ref_em, ref_f1 = float(ref["exact_match"]) / 100, float(ref["f1"]) / 100
        assert exact_match(prediction, golds) == pytest.approx(ref_em, abs=1e-6), (prediction, golds)
        if _v11_divergent(prediction, golds):
            n_divergent += 1
            # documented edge case: official v1.1 F1 is 0 here, torchmetrics (v2.0 rule) says 1
            assert (f1(prediction, golds), ref_f1) == (0.0, 1.0), (prediction, golds)
        else:
            assert f1(prediction, golds) == pytest.approx(ref_f1, abs=1e-6), (prediction, golds)
    assert n_divergent >= 3


def test_agrees_with_torchmetrics_corpus(float64_default) -> None:
    pairs = _pairs()
    preds, target = _tm_inputs(pairs)
    metric = TMSQuAD()
    metric.set_dtype(torch.float64)
    metric.update(preds, target)
    ref = {k: float(v) for k, v in metric.compute().items()}
    report = score_predictions({str(i): p for i, (p, _) in enumerate(pairs)},
                               {str(i): g for i, (_, g) in enumerate(pairs)})
    n_divergent = sum(_v11_divergent(p, g) for p, g in pairs)
    assert report.exact_match == pytest.approx(ref["exact_match"], abs=1e-6)
    # each v1.1/v2.0 divergent pair adds 1 to torchmetrics' F1 sum and 0 to ours
    assert report.f1 == pytest.approx(ref["f1"] - 100.0 * n_divergent / len(pairs), abs=1e-6)
    summary = summarize([exact_match(p, g) for p, g in pairs], [f1(p, g) for p, g in pairs], n_boot=10)
    assert summary.exact_match == pytest.approx(report.exact_match, abs=1e-9)
    assert summary.f1 == pytest.approx(report.f1, abs=1e-9)


# --------------------------------------------------------------------------- clean_answer


@pytest.mark.parametrize("text, marker, expected", [
    ("Paris\nQuestion: where is", "\n", "Paris"),
    (" Paris ", "\n", "Paris"),
    ("\t  Denver Broncos\n\n", "\n", "Denver Broncos"),
    ("Paris</a> Question: next", "</a>", "Paris"),
    ("Par\nis</a>", "</a>", "Par"),            # the newline also cuts, whichever comes first
    ("Paris. Q: x", "", "Paris. Q: x"),        # empty marker: only the newline cut applies
    ("\nParis", "\n", ""),                     # ended the answer before saying anything
    ("", "\n", ""),
    ("1976###1977", "###", "1976"),
])
def test_clean_answer(text: str, marker: str, expected: str) -> None:
    assert clean_answer(text, marker) == expected


def test_clean_answer_default_marker() -> None:
    assert clean_answer("  Seine\nQ:") == "Seine"


# --------------------------------------------------------------------------- bootstrap / summarize


def test_bootstrap_deterministic_and_contains_mean() -> None:
    rng = random.Random(0)
    values = [rng.random() for _ in range(300)]
    mean = sum(values) / len(values)
    lo, hi = bootstrap_ci(values, n_boot=500, seed=7)
    assert (lo, hi) == bootstrap_ci(values, n_boot=500, seed=7)
    assert (lo, hi) != bootstrap_ci(values, n_boot=500, seed=8)
    assert lo < mean < hi
    narrow = bootstrap_ci(values, n_boot=500, seed=7, alpha=0.5)
    assert lo <= narrow[0] <= narrow[1] <= hi


def test_bootstrap_constant_and_large_input() -> None:
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    assert bootstrap_ci([1.0]) == (1.0, 1.0)
    lo, hi = bootstrap_ci([0.0, 1.0] * 20_000, n_boot=50)   # exercises the block-wise resampling
    assert 0.49 < lo < 0.5 < hi < 0.51


@pytest.mark.parametrize("kwargs, match", [
    ({"values": []}, "non-empty"),
    ({"values": [1.0, math.nan]}, "NaN"),
    ({"values": [1.0], "n_boot": 0}, "n_boot"),
    ({"values": [1.0], "alpha": 1.0}, "alpha"),
])
def test_bootstrap_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(**kwargs)


def test_summarize_percent_and_to_dict() -> None:
    s = summarize([1, 0, 1, 1], [1.0, 0.5, 1.0, 1.0], first_token_correct=[True, False, True, True],
                  pred_tokens=[1, 2, 3, 4], n_boot=200)
    assert (s.n, s.exact_match, s.f1) == (4, 75.0, 87.5)
    assert s.first_token_accuracy == 0.75 and s.mean_pred_tokens == 2.5
    assert 0.0 <= s.exact_match_ci[0] <= 75.0 <= s.exact_match_ci[1] <= 100.0
    assert 0.0 <= s.f1_ci[0] <= 87.5 <= s.f1_ci[1] <= 100.0
    d = s.to_dict()
    assert isinstance(d["exact_match_ci"], list) and isinstance(d["f1_ci"], list)
    assert json.loads(json.dumps(d)) == d
    assert set(d) == {"n", "exact_match", "f1", "exact_match_ci", "f1_ci", "first_token_accuracy",
                      "mean_pred_tokens"}
    assert s == summarize([1, 0, 1, 1], [1.0, 0.5, 1.0, 1.0], first_token_correct=[True, False, True, True],
                          pred_tokens=[1, 2, 3, 4], n_boot=200)
    with pytest.raises(AttributeError):
        s.n = 5  # type: ignore[misc]


def test_summarize_optional_fields_and_errors() -> None:
    s = summarize([0.0], [0.25], n_boot=10)
    assert isinstance(s, Summary)
    assert s.first_token_accuracy is None and s.mean_pred_tokens is None
    assert json.loads(json.dumps(s.to_dict()))["first_token_accuracy"] is None
    with pytest.raises(ValueError, match="at least one"):
        summarize([], [])
    with pytest.raises(ValueError, match="length mismatch"):
        summarize([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="length mismatch"):
        summarize([1.0], [1.0], first_token_correct=[True, False])
    with pytest.raises(ValueError, match="fractions"):
        summarize([100.0], [100.0])     # already percent: would report 10000%


def test_first_token_accuracy() -> None:
    assert first_token_accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError, match="length mismatch"):
        first_token_accuracy([1, 2], [1])
    with pytest.raises(ValueError):
        first_token_accuracy([], [])


# --------------------------------------------------------------------------- score_predictions


GOLDS = {"q1": ["Denver Broncos", "Broncos"], "q2": ["Paris"], "q3": ["1976"]}


def test_score_predictions_missing_and_extra() -> None:
    report = score_predictions({"q1": "the Broncos", "q2": "Paris, France", "zz": "extra", "yy": ""}, GOLDS)
    assert isinstance(report, ScoreReport)
    assert (report.n_questions, report.n_answered) == (3, 2)
    assert report.missing_ids == ("q3",)
    assert report.extra_ids == ("zz", "yy")
    assert report.exact_match == pytest.approx(100 / 3)
    assert report.f1 == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_score_predictions_all_present() -> None:
    report = score_predictions({"q1": "Broncos", "q2": "paris", "q3": "in 1976"}, GOLDS)
    assert report.missing_ids == () and report.extra_ids == ()
    assert report.exact_match == pytest.approx(200 / 3)
    assert report.f1 == pytest.approx(100 * (1 + 1 + 2 / 3) / 3)


@pytest.mark.parametrize("bad", [42, None, ["Paris"], {"text": "Paris"}, 1.5, True])
def test_score_predictions_non_string_answer(bad) -> None:
    with pytest.raises(ScoreInputError) as err:
        score_predictions({"q1": "Broncos", "q2": bad}, GOLDS, source="preds.json")
    message = str(err.value)
    assert "preds.json" in message and "'q2'" in message and "string" in message


def test_score_predictions_not_a_mapping() -> None:
    with pytest.raises(ScoreInputError, match=r"preds\.json.*not a JSON object"):
        score_predictions([{"id": "q1", "prediction_text": "x"}], GOLDS, source="preds.json")  # type: ignore[arg-type]
    assert issubclass(ScoreInputError, ValueError)


def test_score_predictions_empty_golds() -> None:
    with pytest.raises(ValueError, match="no questions"):
        score_predictions({"q1": "x"}, {})


def test_load_predictions_file(tmp_path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"q1": "Broncos", "q2": "Café"}, ensure_ascii=False), encoding="utf-8")
    assert load_predictions_file(good) == {"q1": "Broncos", "q2": "Café"}
    assert load_predictions_file(str(good)) == {"q1": "Broncos", "q2": "Café"}


def test_load_predictions_file_malformed(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"q1": "Broncos",\n "q2": Paris}', encoding="utf-8")
    with pytest.raises(ScoreInputError) as err:
        load_predictions_file(bad)
    message = str(err.value)
    assert str(bad) in message and "line 2" in message and "column 8" in message


@pytest.mark.parametrize("content", ['["Broncos"]', '"Broncos"', "null", "3"])
def test_load_predictions_file_not_object(tmp_path, content: str) -> None:
    path = tmp_path / "list.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ScoreInputError, match=r"list\.json.*not an object"):
        load_predictions_file(path)


def test_load_predictions_file_not_utf8(tmp_path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"q1": "Café"}'.encode("latin-1"))
    with pytest.raises(ScoreInputError, match=r"latin1\.json.*UTF-8"):
        load_predictions_file(path)


@st.composite
def _predictions_and_golds(draw) -> tuple[dict[str, str], dict[str, list[str]]]:
    golds = draw(st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=15), min_size=1, max_size=3),
                                 min_size=1, max_size=8))
    answered = draw(st.lists(st.sampled_from(sorted(golds)), unique=True))
    extra = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=15), max_size=3))
    predictions = {**extra, **{qid: draw(st.text(max_size=15)) for qid in answered}}
    return predictions, golds


@settings(max_examples=150, deadline=None)
@given(_predictions_and_golds())
def test_score_predictions_properties(data) -> None:
    """Never raises on string answers; EM <= F1 except for the v1.1 empty-vs-empty pairs (EM 1, F1 0)."""
    predictions, golds = data
    report = score_predictions(predictions, golds)
    n = len(golds)
    assert 0.0 <= report.exact_match <= 100.0 and 0.0 <= report.f1 <= 100.0
    assert report.n_questions == n and report.n_answered + len(report.missing_ids) == n
    assert set(report.missing_ids) == set(golds) - set(predictions)
    assert set(report.extra_ids) == set(predictions) - set(golds)
    empty_vs_empty = sum(_v11_divergent(predictions[q], golds[q]) for q in golds if q in predictions)
    assert report.exact_match <= report.f1 + 100.0 * empty_vs_empty / n + 1e-9
    if empty_vs_empty == 0:
        assert report.exact_match <= report.f1 + 1e-9
