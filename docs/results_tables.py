"""Print the markdown tables of docs/results.md from the run folders that docs/reference_runs.sh writes.

    python docs/results_tables.py [runs/ref] [runs/gpu ...]

Every run must have answered the same test questions (checked across every folder given); rows of runs not finished
yet are left out. The first folder gives the reference, BOS and budget tables; each further folder (e.g. the runs of
benchmarks/gpu_session.sh) one table of its runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from seqcomp.experiments import budget_rows, check_same_questions
from seqcomp.runs import finished_runs, load_run

REFERENCE = [  # (row label, run folder)
    ("zero-shot text (full passage)", "zs-text"),
    ("zero-shot truncation, M = 32", "zs-truncate"),
    ("zero-shot selection, M = 32", "zs-select"),
    ("trained text (`text-ceiling`)", "text-2000"),
    ("trained truncation (`truncate-trained`), M = 32", "truncate-2000"),
    ("trained selection (`select-trained`), M = 32", "select-2000"),
    ("LM encoder (`encoder`), M = 32", "encoder-2000"),
]
BOS = [("text-ceiling", "text-2000", "text-2000-nobos"), ("truncate-trained", "truncate-2000", "truncate-2000-nobos")]


def ci(m: dict, key: str) -> str:
    lo, hi = m[f"{key}_ci"]
    return f"{m[key]:.1f} [{lo:.1f}, {hi:.1f}]"


def minutes(m: dict) -> str:
    seconds = m.get("train_seconds", m.get("seconds"))
    return f"{seconds / 60:.1f}" if seconds is not None else ""


def main() -> int:
    root, *others = [Path(a) for a in sys.argv[1:]] or [Path("runs/ref")]
    runs = {f.path.name: load_run(f.path) for f in finished_runs(root, recursive=False)}
    more = {folder: {f.path.name: load_run(f.path) for f in finished_runs(folder, recursive=False)} for folder in others}
    check_same_questions([*runs.values(), *(r for group in more.values() for r in group.values())])
    print("| system | n | EM [95% CI] | F1 [95% CI] | mean generated tokens | training questions | minutes |")
    print("|---|---|---|---|---|---|---|")
    for label, folder in REFERENCE:
        if folder in runs:
            m = runs[folder].metrics
            print(f"| {label} | {m['n']} | {ci(m, 'exact_match')} | {ci(m, 'f1')} | {m['mean_pred_tokens']:.1f} | "
                  f"{m.get('n_train', 0):,} | {minutes(m)} |")
    print("\n| system | BOS between passage and question | n | EM [95% CI] | F1 [95% CI] |\n|---|---|---|---|---|")
    for name, with_bos, without in BOS:
        for label, folder in (("yes", with_bos), ("no", without)):
            if folder in runs:
                m = runs[folder].metrics
                print(f"| {name} | {label} | {m['n']} | {ci(m, 'exact_match')} | {ci(m, 'f1')} |")
    print("\n| system | training questions | n | F1 [95% CI] | EM [95% CI] | training minutes |\n|---|---|---|---|---|---|")
    for row in sorted(budget_rows(root), key=lambda r: (r["system"], r["n_train"])):
        print(f"| {row['system']} | {row['n_train']:,} | {row['n']} | {ci(row, 'f1')} | {ci(row, 'exact_match')} | "
              f"{row['train_seconds'] / 60:.1f} |")
    for folder, group in more.items():
        print(f"\n{folder}:\n\n| run | n | EM [95% CI] | F1 [95% CI] | mean generated tokens | training questions | "
              "skipped batches | training seconds |\n|---|---|---|---|---|---|---|---|")
        for name, run in sorted(group.items()):
            m = run.metrics
            print(f"| {name} | {m['n']} | {ci(m, 'exact_match')} | {ci(m, 'f1')} | {m['mean_pred_tokens']:.1f} | "
                  f"{m.get('n_train', 0):,} | {m.get('skipped_batches', 0)} | {m.get('train_seconds', 0):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
