"""A setup check's result, shared by the doctor (``seqcomp.doctor``) and its reach checks (``seqcomp.doctor_reach``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str  # what was measured
    cause: str = ""  # plain-language cause when failed
    fix: str = ""  # what to change

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def format_checks(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"[{'PASS' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
        if not c.passed:
            lines.append(f"       cause: {c.cause}")
            lines.append(f"       fix:   {c.fix}")
    return "\n".join(lines)
