"""Time batched vs one-at-a-time greedy generation on the real model and real dev questions.

    python benchmarks/generation.py [--n 64] [--batch-size 16] [--precision fp32] [--out benchmarks/generation.json]

Predictions must be identical both ways (the script exits 1 otherwise); prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from seqcomp.baselines import baseline_prefix
from seqcomp.config import GenerationConfig, LayoutConfig
from seqcomp.data import load_squad, subsample
from seqcomp.evaluate import predict
from seqcomp.lm import load_lm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default=None, help="SQuAD source (default $SEQCOMP_SQUAD_DIR)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--out", default="benchmarks/generation.json")
    args = parser.parse_args()

    lm = load_lm(args.model, args.precision)
    examples = subsample(load_squad(args.data, "validation"), args.n, seed=0)
    layout = LayoutConfig()
    prefix_fn = lambda exs: [baseline_prefix("text", lm.tokenizer, e) for e in exs]  # noqa: E731
    timings, outputs = {}, {}
    for label, batch_size in (("batched", args.batch_size), ("one_at_a_time", 1)):
        start = time.perf_counter()
        gens = predict(lm, examples, prefix_fn, GenerationConfig(args.max_new_tokens, batch_size), layout,
                       via_input_ids=True, desc=label)
        timings[label] = time.perf_counter() - start
        outputs[label] = [g.token_ids for g in gens]
    identical = outputs["batched"] == outputs["one_at_a_time"]
    result = {
        "model": args.model, "precision": args.precision, "n_questions": args.n, "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(),
        "batched_seconds": round(timings["batched"], 2), "one_at_a_time_seconds": round(timings["one_at_a_time"], 2),
        "batched_questions_per_s": round(args.n / timings["batched"], 3),
        "one_at_a_time_questions_per_s": round(args.n / timings["one_at_a_time"], 3),
        "speedup": round(timings["one_at_a_time"] / timings["batched"], 2),
        "identical_predictions": identical,
        "n_differing": sum(a != b for a, b in zip(outputs["batched"], outputs["one_at_a_time"])),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
