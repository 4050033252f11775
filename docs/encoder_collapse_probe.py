"""How alike the LM encoder's compressed vectors are across passages at initialisation (docs/results.md, "On a GPU").

    python docs/encoder_collapse_probe.py [--n 24]

For the `encoder` preset's encoder (6 causal layers) and `encoder-full`'s (28 bidirectional layers), untrained,
on the first n dev passages of `data.seed` 0: the cross-input cosine of the compressed slots, of the mean-pooled
last-layer states before the projector, of those states centred (the mean over all slots removed) and standardised
(also divided by each dimension's spread), and the residual dimensions with the largest mean |value|.
"""

from __future__ import annotations

import argparse

import torch

from seqcomp.collapse import cross_input_cosine
from seqcomp.compressor import pool_matrix
from seqcomp.config import apply_overrides
from seqcomp.data import load_squad, subsample
from seqcomp.lm import load_lm
from seqcomp.presets import get_preset
from seqcomp.sources import text_source_ids
from seqcomp.system import CompressionSystem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="dev passages")
    args = parser.parse_args()
    torch.manual_seed(0)
    lm = load_lm("smollm2-135m-instruct", "bf16")
    examples = subsample(load_squad(None, "validation"), args.n, seed=0)
    for preset in ("encoder", "encoder-full"):
        config = apply_overrides(get_preset(preset), {})
        system = CompressionSystem(config, lm)
        with torch.no_grad():
            slots = system.compress(lm, examples)
            ids, mask, _ = text_source_ids(lm, [e.context for e in examples], config.data.max_source_tokens)
            with lm.autocast():
                states = system.compressor.encode(ids, mask)
            pooled = torch.bmm(pool_matrix(mask, config.compressor.m), states.float())
            flat = pooled.reshape(-1, pooled.shape[-1])
            centred = pooled - flat.mean(0)
            standardised = centred / (flat.std(0) + 1e-6)
            magnitude = flat.abs().mean(0)
            top = magnitude.topk(3)
        print(f"{preset} ({config.compressor.encoder_layers} layers, bidirectional={config.compressor.bidirectional}): "
              f"slots {cross_input_cosine(slots):.3f}; pooled states {cross_input_cosine(pooled):.3f}, centred "
              f"{cross_input_cosine(centred):.3f}, standardised {cross_input_cosine(standardised):.3f}; largest mean "
              f"|dim| {top.indices.tolist()} = {[round(v, 1) for v in top.values.tolist()]}, median "
              f"{magnitude.median():.2f}", flush=True)


if __name__ == "__main__":
    main()
