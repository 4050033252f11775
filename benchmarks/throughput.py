"""Training and generation throughput of every system kind, as a share of this machine's measured matmul peak.

    python benchmarks/throughput.py [--batch-sizes 8 32] [--steps 3] [--gen-n 32] [--out benchmarks/results/throughput-cpu.json]

First measures the dense matmul peak (bf16 and fp32) of the device, then for each system kind a few training
steps (forward + backward + AdamW, source features warm as from the second epoch on) at each batch size, and
greedy generation from text and from compressed prefixes, batched and one question at a time. Model FLOPs are
counted from the shapes the frozen LM actually processes (padded batch x width; forward 2 x params x tokens plus
attention, backward about the same again since the frozen weights get no weight gradients), so the ratio to the
peak says how much of the hardware the code reaches. Runs unchanged on CUDA (``--device cuda``). Prints and
writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

from seqcomp.api import load as load_trained
from seqcomp.config import GenerationConfig, apply_overrides
from seqcomp.data import load_squad, subsample
from seqcomp.evaluate import predict
from seqcomp.layout import build_lm_input
from seqcomp.lm import load_lm
from seqcomp.losses import answers_for
from seqcomp.presets import get_preset
from seqcomp.system import CompressionSystem
from seqcomp.trainer import step_losses

SYSTEMS = {  # kind -> the preset that trains it
    "query": "tier1",
    "pool": "best",
    "text": "text-ceiling",
    "truncate": "truncate-trained",
    "encoder": "encoder",  # 6 trained layers, causal, no teacher (the CPU recipe)
    "encoder-full": "encoder-full",  # 28 trained layers, bidirectional, dense KD from the text teacher (the GPU recipe)
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """GFLOP/s of an n x n x n matmul (best of ``repeats``)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def shape_ceiling(lm, rows: int, device: torch.device, repeats: int = 5) -> float:
    """GFLOP/s of one decoder layer's seven linear maps (q, k, v, o, gate, up, down) at ``rows`` tokens, in the
    LM's dtype: what matmuls of this model's own shapes reach on this device, a tighter ceiling than the
    square-matmul peak (a 576-wide model at a few thousand tokens cannot use a large GEMM's blocking)."""
    weights = [m.weight for m in lm.model.model.layers[0].modules() if isinstance(m, torch.nn.Linear)]
    x = {w.shape[1]: torch.randn(rows, w.shape[1], device=device, dtype=lm.dtype) for w in weights}
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for w in weights)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            for w in weights:
                torch.nn.functional.linear(x[w.shape[1]], w)
            sync(device)
            best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def lm_flops(lm, batch: int, width: int, logits: int) -> float:
    """Forward FLOPs of the frozen LM on a [batch, width] input keeping ``logits`` logit rows per row."""
    cfg = lm.model.config
    d, layers = cfg.hidden_size, cfg.num_hidden_layers
    embed = lm.embed.weight.numel()
    body = sum(p.numel() for p in lm.model.model.layers.parameters())
    tokens = batch * width
    attention = 2 * 2 * layers * batch * width * width * d  # QK^T and AV over the full (masked) square
    return 2 * body * tokens + attention + 2 * embed * batch * logits


def extra_flops(lm, config, system, batch) -> float:
    """Training FLOPs beyond the frozen decoder's pass: the encoder's forward + backward with weight gradients
    (about 6 x its layer parameters x source tokens, plus attention) and the dense-KD teacher's forward over
    the full text prompt (2 x body parameters x tokens)."""
    flops = 0.0
    cfg = lm.model.config
    if config.compressor.kind == "encoder":
        from seqcomp.sources import source_ids

        ids, mask, _ = source_ids(lm, batch, config.compressor, config.data.max_source_tokens)
        n_layers = config.compressor.encoder_layers
        layer = sum(p.numel() for p in lm.model.model.layers[0].parameters())
        tokens, width = float(mask.sum()), ids.shape[1]
        flops += 6 * n_layers * layer * tokens + 3 * 2 * 2 * n_layers * len(batch) * width * width * cfg.hidden_size
    if config.loss.dense_kd_weight > 0:
        answers, _ = answers_for(lm, config, batch)
        teacher = build_lm_input(lm.embed, system.teacher_prefixes(lm, batch), answers, pad_id=lm.pad_id)
        flops += lm_flops(lm, len(batch), teacher.width, teacher.width)
    return flops


def bench_training(lm, config, examples, batch_size: int, steps: int, device) -> dict:
    system = CompressionSystem(config, lm).to(device)
    params = system.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batches = [examples[i * batch_size:(i + 1) * batch_size] for i in range(steps + 1)]
    with torch.no_grad():  # warm the source-feature cache, as from the second epoch on
        for b in batches:
            system(lm, b)
    times, flops, real_tokens, padded_tokens = [], 0.0, 0, 0
    for i, b in enumerate(batches):
        sync(device)
        start = time.perf_counter()
        parts = step_losses(lm, system, b, config)
        parts["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if i == 0:
            continue  # warm-up step
        times.append(time.perf_counter() - start)
        with torch.no_grad():
            answers, _ = answers_for(lm, config, b)
            lm_input = build_lm_input(lm.embed, system.prefixes(lm, b), answers, pad_id=lm.pad_id)
        fwd = lm_flops(lm, len(b), lm_input.width, max(lm_input.answer_lengths) + 1)
        flops += 2 * fwd + extra_flops(lm, config, system, b)  # + backward to the inputs (frozen: no weight grads)
        real_tokens += int(lm_input.attention_mask.sum())
        padded_tokens += lm_input.attention_mask.numel()
    seconds = sum(times)
    ceiling = shape_ceiling(lm, padded_tokens // len(times), device)
    return {"batch_size": batch_size, "steps": len(times), "seconds_per_step": round(seconds / len(times), 4),
            "examples_per_s": round(batch_size * len(times) / seconds, 2),
            "tokens_per_s": round(real_tokens / seconds, 1), "gflop_per_s": round(flops / seconds / 1e9, 1),
            "shape_ceiling_gflop_per_s": round(ceiling, 1),
            "ratio_to_shape_ceiling": round(flops / seconds / 1e9 / ceiling, 3)}


def bench_generation(lm, config, system, examples, batch_size: int, device) -> dict:
    gen = GenerationConfig(max_new_tokens=config.generation.max_new_tokens, batch_size=batch_size)
    with torch.no_grad():  # warm the source-feature cache and the kernels
        predict(lm, examples[:2], lambda exs: system.prefixes(lm, exs), gen, config.layout, progress=False)
    sync(device)
    start = time.perf_counter()
    gens = predict(lm, examples, lambda exs: system.prefixes(lm, exs), gen, config.layout, progress=False)
    sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(len(g.token_ids) for g in gens)
    return {"batch_size": batch_size, "questions": len(examples), "seconds": round(seconds, 2),
            "questions_per_s": round(len(examples) / seconds, 2), "new_tokens_per_s": round(tokens / seconds, 1),
            "token_ids": [g.token_ids for g in gens]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default=None, help="SQuAD source (default $SEQCOMP_SQUAD_DIR)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gen-n", type=int, default=128,
                        help="questions generated per system and mode (every question of randomly drawn dev passages, "
                             "as a full-dev evaluation meets them)")
    parser.add_argument("--gen-batch-size", type=int, default=64)
    parser.add_argument("--gen-run", help="also time generation from this trained run's prefixes (row `trained`)")
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument("--only", choices=["training", "generation"], help="run one half of the benchmark")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="config override for every system (e.g. compressor.encoder_layers=2 on the tiny model)")
    parser.add_argument("--out", default="benchmarks/results/throughput-cpu.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    peak = {name: round(matmul_peak(device, dtype, args.peak_size, 30), 1)
            for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    print(f"matmul peak GFLOP/s: {peak}", flush=True)
    lm = load_lm(args.model, args.precision, device=str(device))
    train_examples = subsample(load_squad(args.data, "train"), max(args.batch_sizes) * (args.steps + 1), seed=0)
    dev_examples = whole_passages(load_squad(args.data, "validation").examples, args.gen_n, seed=0)
    reference = peak[args.precision]
    result = {"device": str(device), "device_name": _device_name(device), "threads": torch.get_num_threads(),
              "precision": args.precision, "model": args.model, "matmul_peak_gflop_per_s": peak,
              "training": {}, "generation": {}}
    for kind in ([] if args.only == "generation" else args.systems):
        config = apply_overrides(apply_overrides(get_preset(SYSTEMS[kind]), {"model.precision": args.precision}),
                                 args.overrides)
        rows = []
        for bs in args.batch_sizes:
            try:
                row = bench_training(lm, config, train_examples, bs, args.steps, device)
                row["ratio_to_peak"] = round(row["gflop_per_s"] / reference, 3)
            except torch.OutOfMemoryError:  # a measured limit of this device, recorded as such; smaller rows stand
                row = {"batch_size": bs, "error": "out of memory"}
                torch.cuda.empty_cache()
            rows.append(row)
            result["training"][kind] = rows
            _write(args.out, result)  # after every row, so a run cut short keeps what it measured
            print(f"train {kind:9s} {json.dumps(row)}", flush=True)
    # a text prefix, a compressed prefix, and (--gen-run) a trained system's prefix
    for kind in ([] if args.only == "training" else ["text", "pool"] + (["trained"] if args.gen_run else [])):
        if kind == "trained":
            trained = load_trained(args.gen_run, lm=lm)
            config, system = trained.config, trained.system
        else:
            config = apply_overrides(apply_overrides(get_preset(SYSTEMS[kind]), {"model.precision": args.precision}),
                                     args.overrides)
            system = CompressionSystem(config, lm).to(device).eval()
        batched = bench_generation(lm, config, system, dev_examples, args.gen_batch_size, device)
        single = bench_generation(lm, config, system, dev_examples, 1, device)
        row = {"batched": _drop_ids(batched), "one_at_a_time": _drop_ids(single),
               "speedup": round(single["seconds"] / batched["seconds"], 2),
               "identical_predictions": batched["token_ids"] == single["token_ids"],
               "full_dev_minutes_batched": round(10_570 / batched["questions_per_s"] / 60, 1)}
        if kind == "trained":
            row["run"] = args.gen_run
        result["generation"][kind] = row
        _write(args.out, result)
        print(f"generate {kind:6s} {json.dumps(row)}", flush=True)
    print(json.dumps(result, indent=2))
    return 0


def whole_passages(examples, n: int, seed: int) -> list:
    """The first ``n`` questions of dev passages drawn at random, each passage with all its questions."""
    by_passage: dict[str, list] = {}
    for e in examples:
        by_passage.setdefault(e.context, []).append(e)
    passages = list(by_passage)
    random.Random(seed).shuffle(passages)
    out = []
    for passage in passages:
        out += by_passage[passage]
        if len(out) >= n:
            break
    return out[:n]


def _write(path: str, result: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def _drop_ids(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "token_ids"}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
