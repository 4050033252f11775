"""Compressors: pooling weights, RMS calibration, hidden-state sources, and that training moves weights."""

from __future__ import annotations


import pytest
import torch

from seqcomp.compressor import Compressor, pool_matrix
from seqcomp.config import CompressorConfig
from seqcomp.collapse import collapse_report, cross_input_cosine, within_sequence_cosine
from seqcomp.sources import hidden_states, source_ids


def test_pool_matrix_averages_contiguous_chunks_of_real_tokens():
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1]])
    w = pool_matrix(mask, 3)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3))
    assert w[0, 0].tolist()[:2] == [0.5, 0.5] and w[0, 2, 4:6].tolist() == [0.5, 0.5]
    assert torch.all(w[0, :, 6:] == 0) and torch.all(w[1, :, :5] == 0)  # never pools padding
    assert w[1, :, 5:].argmax(-1).tolist() == [0, 1, 2]  # a 3-token row gives one token per slot


def test_pool_matrix_handles_rows_shorter_than_m():
    w = pool_matrix(torch.tensor([[1, 1, 0, 0]]), 4)
    assert torch.allclose(w.sum(-1), torch.ones(1, 4))


@pytest.mark.parametrize("kind", ["query", "pool"])
def test_calibrated_output_matches_embedding_rms_and_uncalibrated_does_not(kind):
    src, mask = torch.randn(3, 10, 64) * 0.02, torch.ones(3, 10, dtype=torch.long)
    good = Compressor(CompressorConfig(kind=kind, m=4, width=32), 64, embedding_rms=0.02)(src, mask)
    assert good.shape == (3, 4, 64)
    assert float(good.pow(2).mean().sqrt()) == pytest.approx(0.02, rel=1e-3)
    bad = Compressor(CompressorConfig(kind=kind, m=4, width=32, calibrate=False), 64, embedding_rms=0.02)(src, mask)
    assert float(bad.pow(2).mean().sqrt()) > 0.5  # the diagnosed LayerNorm output, RMS ~1


def test_optimizer_moves_every_compressor_weight():
    torch.manual_seed(0)
    comp = Compressor(CompressorConfig(kind="query", m=4, width=32), 64, embedding_rms=0.02)
    before = {k: v.detach().clone() for k, v in comp.named_parameters()}
    opt = torch.optim.AdamW(comp.parameters(), lr=1e-3)
    out = comp(torch.randn(2, 6, 64) * 0.02, torch.ones(2, 6, dtype=torch.long))
    (out - torch.randn_like(out)).pow(2).mean().backward()
    opt.step()
    unmoved = [k for k, v in comp.named_parameters() if torch.equal(v, before[k])]
    assert not unmoved


def test_hidden_states_from_first_layers_equal_the_full_forward(tiny, examples):
    ids, mask, _ = source_ids(tiny, examples[:2], CompressorConfig(), 64)
    full = tiny.model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer in (0, 1):
        torch.testing.assert_close(hidden_states(tiny, ids, mask, layer), full[layer].float())
    assert len(tiny.model.model.layers) == tiny.model.config.num_hidden_layers  # restored


def test_collapse_figures_separate_cross_input_from_within_sequence():
    same_input = torch.randn(1, 4, 16).repeat(5, 1, 1)  # every input gives the same slots
    assert cross_input_cosine(same_input) == pytest.approx(1.0, abs=1e-5)
    assert within_sequence_cosine(same_input) < 0.9
    dup_slots = torch.randn(5, 1, 16).repeat(1, 4, 1)  # slots duplicate each other, inputs differ
    assert within_sequence_cosine(dup_slots) == pytest.approx(1.0, abs=1e-5)
    assert cross_input_cosine(dup_slots) < 0.9
    report = collapse_report(torch.randn(5, 4, 16) * 0.1, 0.1)
    assert 0.5 < report["rms_ratio"] < 2 and report["effective_rank"] > 1
