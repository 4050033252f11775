"""Which questions a run trains, selects checkpoints and reports on: one definition for every system.

Baselines and trained systems that share ``data.seed``/``data.n_test`` report on the same dev
questions. The selection slice is disjoint from the test slice (bug B7) unless the diagnosed
``select_on_test`` bug is configured on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import DataConfig
from .data import SquadExample, disjoint_slices, load_squad, subsample, test_pool
from .synthetic import key_recall_examples

SYNTHETIC = "synthetic:key-recall"


@dataclass(frozen=True)
class Slices:
    train: tuple[SquadExample, ...]
    select: tuple[SquadExample, ...]
    test: tuple[SquadExample, ...]
    source: str


def eval_slices(data: DataConfig) -> tuple[tuple[SquadExample, ...], tuple[SquadExample, ...], str]:
    """(selection, test) slices of the validation split, and the source they came from."""
    if data.source == SYNTHETIC:
        pool = key_recall_examples(data.n_select + data.n_test, seed=data.seed + 1000)
        select, test = tuple(pool[:data.n_select]), tuple(pool[data.n_select:])
        return (test if data.select_on_test else select), test, SYNTHETIC
    split = load_squad(data.source, "validation")
    select, test = disjoint_slices(split, data.n_select, data.n_test, data.seed)
    return (test if data.select_on_test else select), test, split.source


def train_slice(data: DataConfig) -> tuple[SquadExample, ...]:
    if data.source == SYNTHETIC:
        return tuple(key_recall_examples(data.n_train, seed=data.seed))
    return tuple(subsample(load_squad(data.source, "train"), data.n_train, data.seed))


def passage_pool(data: DataConfig, n: int) -> tuple[str, ...]:
    """Up to ``n`` distinct passages of the whole training split (shuffled with ``data.seed``): what a pretraining
    stage reads when ``pretrain.passages_from`` is "train-split", whatever ``data.n_train`` is."""
    if data.source == SYNTHETIC:
        return tuple(dict.fromkeys(e.context for e in key_recall_examples(n, seed=data.seed + 2000)))
    split = load_squad(data.source, "train")
    examples = subsample(split, len(split), data.seed)
    return tuple(dict.fromkeys(e.context for e in examples))[:n]


def load_slices(data: DataConfig) -> Slices:
    select, test, source = eval_slices(data)
    return Slices(train=train_slice(data), select=select, test=test, source=str(source))


def full_test_size(data: DataConfig) -> int:
    """How many questions ``--n all`` evaluates: every dev question outside the selection articles (the test
    pool that ``data.seed`` defines; the selection questions picked the checkpoint, so they are not reported)."""
    if data.source == SYNTHETIC:
        return data.n_test
    return len(test_pool(load_squad(data.source, "validation"), data.seed))
