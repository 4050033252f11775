"""Shared fixtures: the tiny random model (no download) and small hand-made SQuAD examples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from seqcomp.data import SquadExample

REPO = Path(__file__).resolve().parents[1]
SHARED_SQUAD = REPO.parent / "shared" / "data" / "squad"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny():
    from seqcomp.lm import load_lm

    return load_lm("tiny", "fp32")


def make_example(i: int, context: str, question: str, answers: tuple[str, ...]) -> SquadExample:
    return SquadExample(id=f"q{i}", title=f"t{i % 3}", context=context, question=question, answers=answers,
                        answer_starts=tuple(max(context.find(a), 0) for a in answers))


@pytest.fixture(scope="session")
def examples() -> list[SquadExample]:
    rows = [
        ("The key is red. The river runs to the city.", "What is the key?", ("red",)),
        ("In 1000 the king built a church near the school.", "When was the church built?", ("1000", "in 1000")),
        ("Music was played at the war school.", "Where was music played?", ("the war school",)),
        ("The city of 100 rivers.", "How many rivers?", ("100",)),
        ("Why is the key red? Because the king was red.", "Why is the key red?", ("because the king was red",)),
    ]
    return [make_example(i, c, q, a) for i, (c, q, a) in enumerate(rows)]


def real_squad_available() -> bool:
    return (SHARED_SQUAD / "dev-v1.1.json.gz").is_file()
