"""Tiny generated tasks for tests and CI smoke runs (no data is copied from anywhere).

``key_recall_examples`` is a learning check: the answer is a word that occurs once in the passage,
so a compressor that keeps the passage's content beats chance (1 / n_keys) and one that does not
cannot. Filler and key vocabularies are disjoint, so the key can only come from the key sentence.
"""

from __future__ import annotations

import gzip as gzip_module
import json
import random
from collections.abc import Iterable
from pathlib import Path

from .data import SquadExample

# Common words first: they are single tokens in real tokenizers and in the tiny test tokenizer, so
# the answer is one token and a 20-word passage stays well inside a 64-token source budget.
KEY_WORDS = ("red", "king", "war", "school", "church", "year", "fish", "moon", "gold", "sun", "star", "tree",
             "rock", "salt", "milk", "bread", "ship", "horse", "frog", "wolf", "bear", "lamp", "rope", "bell",
             "drum", "coin", "ring", "hat", "shoe", "boat", "rain", "snow")
FILLER_WORDS = ("the", "a", "an", "of", "and", "in", "to", "was", "for", "on", "with", "as", "by", "at", "from",
                "that", "which", "this", "it", "city", "river", "music", "many")
QUESTION = "What is the key?"
KEY_SENTENCE = "The key is {}."
ARTICLE_SIZE = 8  # questions per synthetic article, so title-grouped slicing has groups to split


def _sentence(words: list[str]) -> str:
    return (" ".join(words).capitalize() + ".") if words else ""


def key_recall_examples(n: int, seed: int, n_keys: int = 8, filler_words: int = 20) -> list[SquadExample]:
    """n passages of seeded filler with one "The key is <word>." sentence at a random position."""
    if not 2 <= n_keys <= len(KEY_WORDS):
        raise ValueError(f"n_keys must be in 2..{len(KEY_WORDS)}, got {n_keys}")
    if n < 0 or filler_words < 0:
        raise ValueError(f"n and filler_words must be >= 0, got n={n}, filler_words={filler_words}")
    rng = random.Random(f"key-recall:{seed}")
    examples = []
    for i in range(n):
        key = KEY_WORDS[rng.randrange(n_keys)]
        words = [rng.choice(FILLER_WORDS) for _ in range(filler_words)]
        cut = rng.randint(0, filler_words)
        before, key_sentence = _sentence(words[:cut]), KEY_SENTENCE.format(key)
        context = " ".join(s for s in (before, key_sentence, _sentence(words[cut:])) if s)
        start = context.index(key_sentence) + key_sentence.index(key)
        examples.append(SquadExample(id=f"key-recall-s{seed}-{i:05d}", title=f"Key recall {seed}/{i // ARTICLE_SIZE}",
                                     context=context, question=QUESTION, answers=(key,), answer_starts=(start,)))
    return examples


def write_squad_json(examples: Iterable[SquadExample], path: str | Path, gzip: bool | None = None) -> Path:
    """Write the official SQuAD layout; gzip None -> by the ``.gz`` suffix.

    Examples are grouped into articles by title and into paragraphs by context (first appearance
    first), so ``load_squad`` returns them in that grouped order.
    """
    path = Path(path)
    articles: dict[str, dict[str, list[dict]]] = {}
    for e in examples:
        if len(e.answers) != len(e.answer_starts):
            raise ValueError(f"question {e.id!r}: {len(e.answers)} answers but {len(e.answer_starts)} answer_starts")
        qa = {"id": e.id, "question": e.question,
              "answers": [{"text": t, "answer_start": s} for t, s in zip(e.answers, e.answer_starts)]}
        articles.setdefault(e.title, {}).setdefault(e.context, []).append(qa)
    doc = {"version": "1.1", "data": [
        {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()]}
    raw = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    compress = path.name.endswith(".gz") if gzip is None else gzip
    path.write_bytes(gzip_module.compress(raw, mtime=0) if compress else raw)
    return path
