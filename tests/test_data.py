"""SQuAD loading: formats, resolution, precise errors, skips, slicing, and corruption properties."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqcomp import data
from seqcomp.data import (DataError, SquadExample, disjoint_slices, load_squad, resolve_squad_source,
                          subsample)
from seqcomp.synthetic import KEY_WORDS, key_recall_examples, write_squad_json

SHARED_SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad"


def ex(qid: str, title: str, context: str, question: str, answers: tuple[str, ...]) -> SquadExample:
    return SquadExample(qid, title, context, question, answers, tuple(max(context.find(a), 0) for a in answers))


EXAMPLES = (
    ex("q1", "Alpha", "The cat sat on the mat in 1999.", "Where did the cat sit?", ("on the mat", "the mat", "the mat")),
    ex("q2", "Alpha", "The cat sat on the mat in 1999.", "When?", ("1999",)),
    ex("q3", "Alpha", "Dogs bark at night.", "When do dogs bark?", ("at night",)),
    ex("q4", "Βήτα ünï", "Ein Zürcher Café — 東京 🚀 liegt hier.", "Wo?", ("東京 🚀", "hier")),
)


def hf_row(e: SquadExample) -> dict:
    return {"id": e.id, "title": e.title, "context": e.context, "question": e.question,
            "answers": {"text": list(e.answers), "answer_start": list(e.answer_starts)}}


def write_bytes(path: Path, raw: bytes) -> Path:
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def write_jsonl(rows: list, path: Path) -> Path:
    return write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())


def official_doc(examples=EXAMPLES) -> dict:
    articles: dict = {}
    for e in examples:
        qa = {"id": e.id, "question": e.question,
              "answers": [{"text": t, "answer_start": s} for t, s in zip(e.answers, e.answer_starts)]}
        articles.setdefault(e.title, {}).setdefault(e.context, []).append(qa)
    return {"version": "1.1", "data": [{"title": t, "paragraphs": [{"context": c, "qas": q} for c, q in ps.items()]}
                                       for t, ps in articles.items()]}


def write_doc(doc, path: Path) -> Path:
    return write_bytes(path, json.dumps(doc, ensure_ascii=False).encode())


# --- formats ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dev.json", "dev.json.gz"])
def test_official_round_trip(tmp_path, name):
    split = load_squad(write_squad_json(EXAMPLES, tmp_path / name), "validation")
    assert split.examples == EXAMPLES and split.split == "validation" and split.source == str(tmp_path / name)
    assert split.skipped == () and split.answers_not_in_context == 0 and len(split) == 4
    if name.endswith(".gz"):
        assert (tmp_path / name).read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("name", ["validation.jsonl", "validation.jsonl.gz", "exported.json"])
def test_hf_rows_round_trip(tmp_path, name):
    """.json holding rows is what datasets' Dataset.to_json writes."""
    split = load_squad(write_jsonl([hf_row(e) for e in EXAMPLES], tmp_path / name))
    assert split.examples == EXAMPLES


def test_single_row_json(tmp_path):
    assert load_squad(write_jsonl([hf_row(EXAMPLES[3])], tmp_path / "one.json")).examples == EXAMPLES[3:]


def test_all_answers_kept_in_order(tmp_path):
    split = load_squad(write_squad_json(EXAMPLES, tmp_path / "d.json"))
    assert split.by_id("q1").answers == ("on the mat", "the mat", "the mat")
    assert split.golds()["q4"] == ["東京 🚀", "hier"]
    with pytest.raises(KeyError, match="nope"):
        split.by_id("nope")


def test_gzip_flag_overrides_suffix_and_loader_sniffs_gzip(tmp_path):
    path = write_squad_json(EXAMPLES, tmp_path / "plain.json", gzip=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert load_squad(path).examples == EXAMPLES
    assert write_squad_json(EXAMPLES, tmp_path / "x.json.gz", gzip=False).read_bytes()[:1] == b"{"


# --- resolution ---------------------------------------------------------------------------------------

def test_folder_resolution(tmp_path):
    write_squad_json(EXAMPLES[:2], tmp_path / "dev-v1.1.json.gz")
    write_squad_json(EXAMPLES[:1], tmp_path / "train-v1.1.reconstructed.json.gz")
    write_jsonl([hf_row(EXAMPLES[3])], tmp_path / "train.jsonl")
    assert resolve_squad_source(tmp_path, "dev") == tmp_path / "dev-v1.1.json.gz"
    assert resolve_squad_source(str(tmp_path), "train") == tmp_path / "train-v1.1.reconstructed.json.gz"
    assert len(load_squad(tmp_path, "validation")) == 2 and len(load_squad(tmp_path, "train")) == 1
    write_squad_json(EXAMPLES, tmp_path / "train-v1.1.json")  # the official name wins
    assert len(load_squad(tmp_path, "train")) == 4


def test_folder_without_file_lists_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError) as err:
        resolve_squad_source(tmp_path, "validation")
    assert "dev-v1.1.json.gz" in str(err.value) and "validation.jsonl" in str(err.value)
    assert "notes.txt" in str(err.value)


def test_env_var_and_hub_fallback(tmp_path, monkeypatch):
    write_jsonl([hf_row(e) for e in EXAMPLES], tmp_path / "validation.jsonl.gz")
    monkeypatch.setenv("SEQCOMP_SQUAD_DIR", str(tmp_path))
    assert load_squad(None, "validation").examples == EXAMPLES
    monkeypatch.setenv("SEQCOMP_SQUAD_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="SEQCOMP_SQUAD_DIR"):
        resolve_squad_source(None, "validation")
    monkeypatch.delenv("SEQCOMP_SQUAD_DIR")
    assert resolve_squad_source(None, "train") == "rajpurkar/squad"
    assert resolve_squad_source("squad", "train") == "squad"


def test_missing_path_is_not_sent_to_the_hub(tmp_path):
    for source in (tmp_path / "nope.json", str(tmp_path / "nope"), "data/dev.json.gz", "./x"):
        with pytest.raises(FileNotFoundError):
            resolve_squad_source(source, "validation")


def test_split_names(tmp_path):
    with pytest.raises(ValueError, match="train, validation, dev"):
        load_squad(tmp_path, "test")
    assert load_squad(write_squad_json(EXAMPLES, tmp_path / "d.json"), "dev").split == "validation"


def test_hub_path_with_monkeypatched_datasets(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(source, split):
        calls.append((source, split))
        return datasets.Dataset.from_list([hf_row(e) for e in EXAMPLES])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv("SEQCOMP_SQUAD_DIR", raising=False)
    split = load_squad(None, "dev")
    assert calls == [("rajpurkar/squad", "validation")]
    assert split.examples == EXAMPLES and split.source == "rajpurkar/squad" and split.split == "validation"


def test_cache_follows_file_changes(tmp_path):
    path = write_squad_json(EXAMPLES, tmp_path / "d.json")
    assert len(load_squad(path)) == 4
    write_squad_json(EXAMPLES[:2], path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert len(load_squad(path)) == 2


# --- errors and skips ---------------------------------------------------------------------------------

def _set(path: str, value):
    def mutate(doc):
        *parents, last = path.split("/")
        node = doc
        for key in parents:
            node = node[int(key) if key.isdigit() else key]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return mutate


_DELETE = object()
P0 = "data/0/paragraphs/0"


@pytest.mark.parametrize("mutate, record, field", [
    (_set(f"{P0}/context", 7), "data[0].paragraphs[0]", "context"),
    (_set(f"{P0}/qas", {"id": "x"}), "data[0].paragraphs[0]", "qas"),
    (_set(f"{P0}/qas/0/answers", _DELETE), "q1", "answers"),
    (_set(f"{P0}/qas/0/answers/1/text", ["the mat"]), "q1", "answers[1].text"),
    (_set(f"{P0}/qas/1/answers/0/answer_start", "12"), "q2", "answers[0].answer_start"),
    (_set(f"{P0}/qas/1/answers/0/answer_start", True), "q2", "answer_start"),
    (_set(f"{P0}/qas/1/id", _DELETE), "data[0].paragraphs[0].qas[1]", "id"),
    (_set("data/1/title", None), "data[1]", "title"),
    (_set("data", {}), "top level", "data"),
])
def test_malformed_official_names_file_record_field(tmp_path, mutate, record, field):
    doc = official_doc()
    mutate(doc)
    path = write_doc(doc, tmp_path / "broken-dev.json")
    with pytest.raises(DataError) as err:
        load_squad(path)
    message = str(err.value)
    assert "broken-dev.json" in message and record in message and f"'{field}'" in message and "fix:" in message


def test_duplicate_ids_name_both_locations(tmp_path):
    doc = official_doc()
    doc["data"][1]["paragraphs"][0]["qas"][0]["id"] = "q2"
    with pytest.raises(DataError) as err:
        load_squad(write_doc(doc, tmp_path / "dup.json"))
    assert "data[0].paragraphs[0].qas[1]" in str(err.value) and "data[1].paragraphs[0].qas[0]" in str(err.value)


@pytest.mark.parametrize("name", ["cut.json", "cut.json.gz"])
def test_truncated_file(tmp_path, name):
    raw = json.dumps(official_doc(), indent=1).encode()
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(raw)[:-30])
    else:
        path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.json.*(line \d+, column \d+|gzip)"):
        load_squad(path)


@pytest.mark.parametrize("mutate, record, field", [
    (lambda rows: rows[1]["answers"].update(text="1999"), "q2", "answers.text"),
    (lambda rows: rows[1]["answers"].update(answer_start=[]), "q2", "answers"),
    (lambda rows: rows[2]["answers"]["answer_start"].__setitem__(0, 1.5), "q3", "answers.answer_start[0]"),
    (lambda rows: rows[3].pop("context"), "q4", "context"),
    (lambda rows: rows.__setitem__(0, ["q1"]), "line 1", "(row)"),
])
def test_malformed_jsonl_names_file_record_field(tmp_path, mutate, record, field):
    rows = [hf_row(e) for e in EXAMPLES]
    mutate(rows)
    with pytest.raises(DataError) as err:
        load_squad(write_jsonl(rows, tmp_path / "rows.jsonl"))
    message = str(err.value)
    assert "rows.jsonl" in message and record in message and f"'{field}'" in message


def test_malformed_jsonl_line_and_non_utf8(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(hf_row(EXAMPLES[0])) + "\n{\"id\": \"q2\", oops}\n")
    with pytest.raises(DataError, match=r"rows\.jsonl: line 2, column \d+"):
        load_squad(path)
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match="UTF-8"):
        load_squad(path)


def test_unscorable_questions_are_skipped_and_listed(tmp_path):
    doc = official_doc()
    qas = doc["data"][0]["paragraphs"][0]["qas"]
    qas[0]["answers"] = []
    qas[1]["answers"] = [{"text": "", "answer_start": 0}, {"text": "  ", "answer_start": 3}]
    doc["data"][0]["paragraphs"][1]["context"] = " "
    doc["data"][1]["paragraphs"][0]["qas"][0]["answers"].insert(0, {"text": "", "answer_start": 0})
    doc["data"][1]["paragraphs"][0]["qas"][0]["answers"].append({"text": "Mars", "answer_start": 0})
    split = load_squad(write_doc(doc, tmp_path / "d.json"))
    assert [e.id for e in split.examples] == ["q4"] and split.by_id("q4").answers == ("東京 🚀", "hier", "Mars")
    reasons = dict(split.skipped)
    assert len(split.skipped) == 3
    assert reasons["question 'q1' (data[0].paragraphs[0].qas[0])"] == "no answers"
    assert reasons["question 'q2' (data[0].paragraphs[0].qas[1])"] == "all answers are empty strings"
    assert reasons["question 'q3' (data[0].paragraphs[1].qas[0])"] == "empty context"
    assert split.empty_answers_dropped == 1 and split.answers_not_in_context == 1


def test_unknown_extension(tmp_path):
    with pytest.raises(DataError, match=r"data\.csv.*\.jsonl"):
        load_squad(write_doc(official_doc(), tmp_path / "data.csv"))


# --- sampling -----------------------------------------------------------------------------------------

def test_subsample_determinism_exclusion_and_prefix():
    pool = key_recall_examples(50, seed=3)
    a, b = subsample(pool, 10, seed=1), subsample(pool, 10, seed=1)
    assert a == b and len({e.id for e in a}) == 10 and a != subsample(pool, 10, seed=2)
    assert subsample(pool, 20, seed=1)[:10] == a
    excluded = {e.id for e in a}
    rest = subsample(pool, 40, seed=1, exclude_ids=excluded)
    assert not excluded & {e.id for e in rest}
    assert subsample(pool, None, seed=0) == tuple(pool)
    with pytest.raises(ValueError, match="40 are available"):
        subsample(pool, 41, seed=0, exclude_ids=excluded)


def test_disjoint_slices_by_article():
    pool = key_recall_examples(400, seed=0)
    select, test = disjoint_slices(pool, 30, 100, seed=4)
    assert len(select) == 30 and len(test) == 100
    assert not {e.id for e in select} & {e.id for e in test}
    assert not {e.title for e in select} & {e.title for e in test}
    assert disjoint_slices(pool, 5, 100, seed=4)[1] == test  # test slice does not depend on n_select
    assert disjoint_slices(pool, 30, 100, seed=5)[1] != test


def test_disjoint_slices_fallbacks_warn():
    one_article = [SquadExample(f"q{i}", "T", f"passage {i % 4}", "?", ("a",), (0,)) for i in range(40)]
    with pytest.warns(UserWarning, match="by context"):
        select, test = disjoint_slices(one_article, 5, 20, seed=0)
    assert not {e.context for e in select} & {e.context for e in test}
    with pytest.warns(UserWarning, match="by question"):
        select, test = disjoint_slices(one_article, 12, 25, seed=0)
    assert len(select) == 12 and not {e.id for e in select} & {e.id for e in test}
    with pytest.raises(ValueError, match="40 are available"):
        disjoint_slices(one_article, 20, 21, seed=0)


# --- synthetic ----------------------------------------------------------------------------------------

def test_key_recall_examples(tmp_path):
    examples = key_recall_examples(64, seed=7, n_keys=4)
    assert examples == key_recall_examples(64, seed=7, n_keys=4) != key_recall_examples(64, seed=8, n_keys=4)
    assert {e.answers[0] for e in examples} == set(KEY_WORDS[:4])
    for e in examples:
        key = e.answers[0]
        assert e.question == "What is the key?" and f"The key is {key}." in e.context
        assert e.context[e.answer_starts[0]:].startswith(key) and e.context.split().count(key + ".") == 1
    assert load_squad(write_squad_json(examples, tmp_path / "kr.json.gz")).examples == tuple(examples)


# --- properties: any corruption loads or raises DataError -----------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
WRONG = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT,
                  st.lists(st.integers(), max_size=2), st.dictionaries(TEXT, st.integers(), max_size=2))
FORMATS = ("d.json", "d.json.gz", "d.jsonl", "d.jsonl.gz")
_names = itertools.count()


@st.composite
def example_sets(draw, long_context: bool = False) -> tuple[SquadExample, ...]:
    n = draw(st.integers(1, 6))
    out = []
    for i in range(n):
        context = draw(TEXT.filter(str.strip)) * (draw(st.integers(20_000, 60_000)) if long_context else 1)
        answers = tuple(draw(st.lists(TEXT.filter(str.strip), min_size=1, max_size=3)))
        out.append(SquadExample(f"id{i}", draw(st.sampled_from(["A", "B", "Ω"])), context, draw(TEXT), answers,
                                tuple(draw(st.integers(0, 50)) for _ in answers)))
    groups: dict = {}  # the official layout groups by title, then context: compare in that order
    for e in out:
        groups.setdefault(e.title, {}).setdefault(e.context, []).append(e)
    return tuple(e for paragraphs in groups.values() for group in paragraphs.values() for e in group)


def serialize(examples, fmt: str):
    return [hf_row(e) for e in examples] if ".jsonl" in fmt else official_doc(examples)


def write_any(obj, fmt: str, folder: Path) -> Path:
    path = folder / f"{next(_names)}-{fmt}"
    return write_jsonl(obj, path) if ".jsonl" in fmt else write_doc(obj, path)


def leaves(node, path=()):
    """(path, value) of every field and list element below node."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield path + (key,), value
        yield from leaves(value, path + (key,))


def load_or_data_error(path: Path):
    try:
        split = load_squad(path)
    except DataError:
        return None
    for e in split.examples:
        assert all(isinstance(x, str) for x in (e.id, e.title, e.context, e.question, *e.answers))
        assert all(type(s) is int for s in e.answer_starts) and len(e.answers) == len(e.answer_starts)
    return split


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(examples=example_sets(), fmt=st.sampled_from(FORMATS))
def test_prop_valid_unicode_round_trips(tmp_path_factory, examples, fmt):
    path = write_any(serialize(examples, fmt), fmt, tmp_path_factory.mktemp("p"))
    assert load_squad(path).examples == examples


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(examples=example_sets(long_context=True), fmt=st.sampled_from(FORMATS))
def test_prop_long_contexts_round_trip(tmp_path_factory, examples, fmt):
    path = write_any(serialize(examples, fmt), fmt, tmp_path_factory.mktemp("p"))
    assert load_squad(path).examples == examples


@PROPS
@given(examples=example_sets(), fmt=st.sampled_from(FORMATS), data=st.data())
def test_prop_truncation(tmp_path_factory, examples, fmt, data):
    path = write_any(serialize(examples, fmt), fmt, tmp_path_factory.mktemp("p"))
    raw = path.read_bytes()
    path.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
    split = load_or_data_error(path)
    assert split is None or ".jsonl" in fmt  # an official document cut anywhere is never valid


@PROPS
@given(examples=example_sets(), fmt=st.sampled_from(FORMATS), data=st.data())
def test_prop_wrong_type_or_deleted_field(tmp_path_factory, examples, fmt, data):
    obj = serialize(examples, fmt)
    target, old = data.draw(st.sampled_from([(p, v) for p, v in leaves(obj) if p != ("version",)]))
    parent = obj
    for key in target[:-1]:
        parent = parent[key]
    if isinstance(target[-1], str) and data.draw(st.booleans()):
        del parent[target[-1]]
        must_fail = True
    else:
        new = data.draw(WRONG)
        parent[target[-1]] = new
        must_fail = type(new) is not type(old)
    split = load_or_data_error(write_any(obj, fmt, tmp_path_factory.mktemp("p")))
    assert split is None or not must_fail


@PROPS
@given(examples=example_sets(), fmt=st.sampled_from(FORMATS), data=st.data())
def test_prop_duplicate_ids(tmp_path_factory, examples, fmt, data):
    if len(examples) < 2:
        return
    i, j = data.draw(st.lists(st.integers(0, len(examples) - 1), min_size=2, max_size=2, unique=True))
    examples = list(examples)
    examples[j] = SquadExample(examples[i].id, *[getattr(examples[j], f) for f in
                                                  ("title", "context", "question", "answers", "answer_starts")])
    with pytest.raises(DataError, match="repeats the id"):
        load_squad(write_any(serialize(examples, fmt), fmt, tmp_path_factory.mktemp("p")))


# --- the real files -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_squad_files():
    if not (SHARED_SQUAD / "dev-v1.1.json.gz").is_file():
        pytest.skip(f"real SQuAD not found at {SHARED_SQUAD}")
    data._parse_file.cache_clear()
    start = time.perf_counter()
    dev = load_squad(SHARED_SQUAD, "validation")
    seconds = time.perf_counter() - start
    assert len(dev) == 10_570 and sum(len(e.answers) for e in dev.examples) == 34_726
    assert dev.skipped == () and dev.answers_not_in_context == 0 and seconds < 3, seconds
    assert len(load_squad(SHARED_SQUAD, "train")) == 87_599
