"""SQuAD v1.1 loading that fails loudly and precisely.

Three sources give the same ``SquadExample`` records: the official JSON layout (``.json`` /
``.json.gz``), JSON Lines rows in the Hugging Face ``squad`` schema (``.jsonl`` / ``.jsonl.gz``, also
accepted under a ``.json`` name because ``Dataset.to_json`` writes rows), and the hub itself (online
users only). Every malformed record is a ``DataError`` naming file, record, field and fix; questions
that cannot be scored (no answer, empty context) are skipped *and listed*, never silently dropped.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import os
import random
import warnings
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HUB_ID = "rajpurkar/squad"
ENV_VAR = "SEQCOMP_SQUAD_DIR"
SPLIT_ALIASES = {"train": "train", "validation": "validation", "dev": "validation"}
FOLDER_FILES = {  # tried in this order; each also as .gz
    "validation": ("dev-v1.1.json", "validation.jsonl"),
    "train": ("train-v1.1.json", "train-v1.1.reconstructed.json", "train.jsonl"),
}
SELECT_SHARE = 0.2  # share of questions (whole groups) held out as the checkpoint-selection pool

_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}
_FIXES = {
    "data": "the top level must be {\"version\": ..., \"data\": [articles]} (official SQuAD layout)",
    "row": "each line must be one JSON object {\"id\", \"title\", \"context\", \"question\", \"answers\"}",
    "title": "give every article (or row) a string 'title'",
    "paragraphs": "'paragraphs' must be a list of {\"context\", \"qas\"} objects",
    "context": "'context' must be the passage as a string",
    "qas": "'qas' must be a list of {\"id\", \"question\", \"answers\"} objects",
    "id": "give every question a unique string 'id'",
    "question": "'question' must be a string",
    "answers": "official layout: a list of {\"text\", \"answer_start\"}; "
               "HF rows: {\"text\": [...], \"answer_start\": [...]} of equal length",
    "text": "every answer 'text' must be a string",
    "answer_start": "every 'answer_start' must be the integer character offset of the answer in the context",
}


class DataError(ValueError):
    """A SQuAD file that cannot be read as it stands; the message says where and how to fix it."""


@dataclass(frozen=True)
class SquadExample:
    id: str
    title: str
    context: str
    question: str
    answers: tuple[str, ...]  # every gold answer text, file order, duplicates kept (official EM/F1 take the max)
    answer_starts: tuple[int, ...]


@dataclass(frozen=True)
class SquadSplit:
    """One loaded split plus an account of everything that was not loaded as-is."""

    examples: tuple[SquadExample, ...]
    source: str
    split: str
    skipped: tuple[tuple[str, str], ...] = ()  # (record locator, reason)
    answers_not_in_context: int = 0  # kept: a generative reader only needs the text
    empty_answers_dropped: int = 0  # empty gold strings beside non-empty ones (would let "" score EM)

    def __len__(self) -> int:
        return len(self.examples)

    def golds(self) -> dict[str, list[str]]:
        return {e.id: list(e.answers) for e in self.examples}

    @functools.cached_property
    def _index(self) -> dict[str, SquadExample]:
        return {e.id: e for e in self.examples}

    def by_id(self, qid: str) -> SquadExample:
        example = self._index.get(qid)
        if example is None:
            raise KeyError(f"no question with id {qid!r} in {self.source} [{self.split}]")
        return example


def canonical_split(split: str) -> str:
    if split not in SPLIT_ALIASES:
        raise ValueError(f"unknown SQuAD split {split!r}; valid names: {', '.join(SPLIT_ALIASES)} (dev = validation)")
    return SPLIT_ALIASES[split]


def resolve_squad_source(source: str | Path | None, split: str) -> str | Path:
    """A local file for ``split``, or a hub id; None falls back to ``$SEQCOMP_SQUAD_DIR``, then the hub."""
    split = canonical_split(split)
    from_env = source is None
    if source is None:
        source = os.environ.get(ENV_VAR) or None
    if source is None:
        return HUB_ID
    path = Path(source).expanduser()
    if path.is_dir():
        return _file_in_folder(path, split)
    if path.is_file():
        return path
    if from_env or isinstance(source, Path) or _looks_like_path(str(source)):
        origin = f" (from ${ENV_VAR})" if from_env else ""
        raise FileNotFoundError(f"SQuAD source {source}{origin} does not exist; fix: point it at a SQuAD file or "
                                f"folder, or unset it to use the hub id {HUB_ID!r} online")
    return str(source)


def _looks_like_path(source: str) -> bool:
    """A missing path must not be sent to the hub as if it were a dataset id."""
    return source.startswith(("/", ".", "~")) or source.lower().endswith((".json", ".jsonl", ".gz"))


def _file_in_folder(folder: Path, split: str) -> Path:
    wanted = [name + ext for name in FOLDER_FILES[split] for ext in ("", ".gz")]
    for name in wanted:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(found[:20]) + (f", ... ({len(found)} entries)" if len(found) > 20 else "") or "(empty)"
    raise FileNotFoundError(f"no SQuAD {split} file in {folder}: looked for {', '.join(wanted)}; found {shown}; "
                            f"fix: put one of the looked-for files there or pass the file itself")


def load_squad(source: str | Path | None = None, split: str = "validation") -> SquadSplit:
    """Load one split from a file, a folder, ``$SEQCOMP_SQUAD_DIR`` or (online) the hub."""
    split = canonical_split(split)
    resolved = resolve_squad_source(source, split)
    if isinstance(resolved, str):
        return _load_hub(resolved, split)
    stat = resolved.stat()
    return replace(_parse_file(str(resolved), stat.st_mtime_ns, stat.st_size), split=split)


@functools.lru_cache(maxsize=8)
def _parse_file(path: str, mtime_ns: int, size: int) -> SquadSplit:
    """Parsed once per (path, mtime, size): the train file takes about a second to read."""
    name = path.lower().removesuffix(".gz")
    if not name.endswith((".json", ".jsonl")):
        raise DataError(f"{path}: whole file: unknown file type; fix: name it .json/.json.gz (official SQuAD "
                        f"layout) or .jsonl/.jsonl.gz (rows in the Hugging Face squad schema)")
    text, collector = _read_text(Path(path)), _Collector(path)
    if name.endswith(".jsonl"):
        collector.rows_from_lines(text)
        return collector.finish(path, "")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        if not _is_row_file(text, err):
            raise _syntax_error(path, err) from None
        collector.rows_from_lines(text)  # HF Dataset.to_json writes JSON Lines under a .json name
    else:
        if isinstance(doc, dict) and "data" not in doc and "question" in doc:
            collector.row(doc, "line 1")  # the same, with a single row
        else:
            collector.official(doc)
    return collector.finish(path, "")


def _is_row_file(text: str, err: json.JSONDecodeError) -> bool:
    """JSON Lines: the first line alone is one complete object that is not an official document."""
    if err.msg != "Extra data" or err.lineno < 2:
        return False
    try:
        first = json.loads(text.split("\n", 1)[0])
    except json.JSONDecodeError:
        return False
    return isinstance(first, dict) and "data" not in first


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b" or path.name.lower().endswith(".gz"):  # gzip magic: misnamed files load too
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: whole file: not a complete gzip stream ({err}); fix: re-download or "
                            f"re-compress it (`gzip -t {path.name}` checks it)") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} (byte {err.start}): not UTF-8 text; fix: save the file as UTF-8") from None


def _syntax_error(path: str, err: json.JSONDecodeError, line: int | None = None) -> DataError:
    where = f"line {line if line is not None else err.lineno}, column {err.colno}"
    return DataError(f"{path}: {where}: malformed JSON ({err.msg}); fix: the file is truncated or was edited by "
                     f"hand; re-download it or repair the JSON there")


def _load_hub(hub_id: str, split: str) -> SquadSplit:
    """Online path only; datasets keeps its own on-disk cache."""
    import datasets

    collector = _Collector(f"{hub_id} [{split}]")
    try:
        rows = datasets.load_dataset(hub_id, split=split)
    except ConnectionError as err:
        raise DataError(f"{hub_id}: cannot be downloaded from the Hugging Face Hub ({err}); fix: point seqcomp at a "
                        f"local SQuAD v1.1 file or folder with --data PATH, --set data.source=PATH or the "
                        f"SEQCOMP_SQUAD_DIR environment variable") from None
    for i, row in enumerate(rows):
        collector.row(row, f"row {i}")
    return collector.finish(hub_id, split)


class _Collector:
    """Checks records of either layout and gathers examples, skips and counts for one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.examples: list[SquadExample] = []
        self.skipped: list[tuple[str, str]] = []
        self.seen: dict[str, str] = {}
        self.not_in_context = 0
        self.empty_dropped = 0

    def error(self, where: str, field: str, problem: str, fix_key: str) -> DataError:
        return DataError(f"{self.file}: {where}: field '{field}' {problem}; fix: {_FIXES[fix_key]}")

    def get(self, obj: dict, key: str, kind: type, where: str, label: str | None = None) -> Any:
        if key not in obj:
            raise self.error(where, label or key, "is missing", key)
        return self.check(obj[key], kind, where, label or key, key)

    def check(self, value: Any, kind: type, where: str, label: str, fix_key: str) -> Any:
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self.error(where, label, f"is {type(value).__name__}, expected {_TYPE_NAMES[kind]}", fix_key)
        return value

    def official(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            raise self.error("top level", "data", f"cannot be read: the top level is {type(doc).__name__}", "data")
        for i, article in enumerate(self.get(doc, "data", list, "top level")):
            where = f"data[{i}]"
            article = self.check(article, dict, where, where, "data")
            title = self.get(article, "title", str, where)
            for j, para in enumerate(self.get(article, "paragraphs", list, where)):
                pwhere = f"{where}.paragraphs[{j}]"
                para = self.check(para, dict, pwhere, f"paragraphs[{j}]", "paragraphs")
                context = self.get(para, "context", str, pwhere)
                for k, qa in enumerate(self.get(para, "qas", list, pwhere)):
                    qwhere = f"{pwhere}.qas[{k}]"
                    qa = self.check(qa, dict, qwhere, f"qas[{k}]", "qas")
                    loc = f"question {self.get(qa, 'id', str, qwhere)!r} ({qwhere})"
                    question = self.get(qa, "question", str, loc)
                    texts, starts = [], []
                    for m, ans in enumerate(self.get(qa, "answers", list, loc)):
                        ans = self.check(ans, dict, loc, f"answers[{m}]", "answers")
                        texts.append(self.get(ans, "text", str, loc, f"answers[{m}].text"))
                        starts.append(self.get(ans, "answer_start", int, loc, f"answers[{m}].answer_start"))
                    self.add(qa["id"], title, context, question, texts, starts, loc)

    def rows_from_lines(self, text: str) -> None:
        for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise _syntax_error(self.file, err, line=n) from None
            self.row(row, f"line {n}")

    def row(self, row: Any, where: str) -> None:
        row = self.check(row, dict, where, "(row)", "row")
        loc = f"question {self.get(row, 'id', str, where)!r} ({where})"
        title, context, question = (self.get(row, key, str, loc) for key in ("title", "context", "question"))
        answers = self.get(row, "answers", dict, loc)
        texts = self.get(answers, "text", list, loc, "answers.text")
        starts = self.get(answers, "answer_start", list, loc, "answers.answer_start")
        for m, text in enumerate(texts):
            self.check(text, str, loc, f"answers.text[{m}]", "text")
        for m, start in enumerate(starts):
            self.check(start, int, loc, f"answers.answer_start[{m}]", "answer_start")
        if len(texts) != len(starts):
            raise self.error(loc, "answers", f"has {len(texts)} texts but {len(starts)} answer_start values", "answers")
        self.add(row["id"], title, context, question, texts, starts, loc)

    def add(self, qid: str, title: str, context: str, question: str, texts: list[str], starts: list[int],
            loc: str) -> None:
        if qid in self.seen:
            raise self.error(loc, "id", f"repeats the id of {self.seen[qid]}", "id")
        self.seen[qid] = loc
        kept = [(t, s) for t, s in zip(texts, starts) if t.strip()]
        if not context.strip():
            self.skipped.append((loc, "empty context"))
        elif not kept:
            self.skipped.append((loc, "no answers" if not texts else "all answers are empty strings"))
        else:
            self.empty_dropped += len(texts) - len(kept)
            self.not_in_context += sum(t not in context for t, _ in kept)
            self.examples.append(SquadExample(qid, title, context, question, tuple(t for t, _ in kept),
                                              tuple(s for _, s in kept)))

    def finish(self, source: str, split: str) -> SquadSplit:
        return SquadSplit(tuple(self.examples), source, split, tuple(self.skipped), self.not_in_context,
                          self.empty_dropped)


def _examples(split: SquadSplit | Sequence[SquadExample]) -> tuple[SquadExample, ...]:
    return split.examples if isinstance(split, SquadSplit) else tuple(split)


def subsample(split: SquadSplit | Sequence[SquadExample], n: int | None, seed: int,
              exclude_ids: Collection[str] = ()) -> tuple[SquadExample, ...]:
    """The first n of one seeded shuffle (so a larger n extends a smaller one); n None -> all, file order."""
    excluded = set(exclude_ids)
    pool = [e for e in _examples(split) if e.id not in excluded]
    if n is None:
        return tuple(pool)
    if not 0 <= n <= len(pool):
        raise ValueError(f"cannot sample {n} questions: {len(pool)} are available"
                         + (f" after excluding {len(excluded)} ids" if excluded else ""))
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    return tuple(pool[i] for i in order[:n])


def disjoint_slices(split: SquadSplit | Sequence[SquadExample], n_select: int, n_test: int,
                    seed: int) -> tuple[tuple[SquadExample, ...], tuple[SquadExample, ...]]:
    """(selection, test) slices that share no question and, where possible, no article.

    Whole articles (by title) are shuffled with ``seed`` and about ``SELECT_SHARE`` of the questions
    go to a selection pool, the rest to a test pool; each slice is then sampled within its pool. So
    the test slice depends only on the data, ``seed`` and ``n_test`` (not ``n_select``), and
    checkpoint selection never sees a test article. When a pool is too small (few articles) the same
    is tried by context (paragraph), and last by question, with a warning, since those levels let
    near-duplicate passages leak between the slices.
    """
    examples = _examples(split)
    if n_select < 0 or n_test < 0 or n_select + n_test > len(examples):
        raise ValueError(f"cannot take {n_select} selection + {n_test} test questions: {len(examples)} are available")
    for level, key in (("title", lambda e: e.title), ("context", lambda e: e.context)):
        select_pool, test_pool = _partition(examples, key, seed)
        if len(select_pool) >= n_select and len(test_pool) >= n_test:
            if level != "title":
                warnings.warn(f"disjoint_slices: articles too few for {n_select}+{n_test} questions; "
                              f"slices are disjoint by {level} only", stacklevel=2)
            return subsample(select_pool, n_select, seed), subsample(test_pool, n_test, seed)
    warnings.warn(f"disjoint_slices: contexts too few for {n_select}+{n_test} questions; slices are disjoint "
                  f"by question only (a passage may appear in both)", stacklevel=2)
    test = subsample(examples, n_test, seed)
    return subsample(examples, n_select, seed, exclude_ids={e.id for e in test}), test


def test_pool(split: SquadSplit | Sequence[SquadExample], seed: int) -> list[SquadExample]:
    """Every question ``disjoint_slices`` may put in a test slice (article level): the largest test slice."""
    return _partition(_examples(split), lambda e: e.title, seed)[1]


def _partition(examples: Sequence[SquadExample], key, seed: int) -> tuple[list[SquadExample], list[SquadExample]]:
    groups: dict[str, list[SquadExample]] = {}
    for e in examples:
        groups.setdefault(key(e), []).append(e)
    names = list(groups)
    random.Random(seed).shuffle(names)
    target, select, test = math.ceil(SELECT_SHARE * len(examples)), [], []
    for name in names:
        (select if len(select) < target else test).extend(groups[name])
    return select, test
