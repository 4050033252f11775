"""Training: a learning test on synthetic key recall, run folders, checkpoints, and bad configs."""

from __future__ import annotations

import json

import pytest

from seqcomp.config import ConfigError, apply_overrides
from seqcomp.presets import get_preset
from seqcomp.checkpoint import CheckpointError, load_weights
from seqcomp.trainer import train


def key_recall_config(**overrides):
    cfg = get_preset("tiny")
    return apply_overrides(cfg, overrides)


def test_tiny_compressor_learns_key_recall_well_above_chance(tmp_path, tiny):
    """8 possible keys (chance 12.5% EM): the compressor must carry the key from context to answer."""
    cfg = key_recall_config(**{"data.n_train": 256, "data.n_test": 48, "data.n_select": 16, "train.epochs": 8,
                               "train.lr": 1e-2, "train.batch_size": 16, "compressor.m": 4})
    metrics = train(cfg, tmp_path / "run", lm=tiny, progress=False)
    assert metrics["n"] == 48
    assert metrics["exact_match"] >= 50.0, metrics


def test_run_folder_has_every_file_and_checkpoints_reload(tmp_path, tiny):
    cfg = key_recall_config(**{"data.n_train": 16, "data.n_test": 8, "data.n_select": 4})
    run = tmp_path / "run"
    train(cfg, run, lm=tiny, progress=False)
    for name in ("config.json", "metrics.json", "predictions.jsonl", "history.jsonl", "doctor.json",
                 "diagnostics.json", "checkpoints/best.safetensors", "checkpoints/best.json",
                 "checkpoints/last.safetensors", "compressed.safetensors"):
        assert (run / name).is_file(), name
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    train_rows = [h for h in history if h["kind"] == "train"]
    assert train_rows and all("loss_ce" in h and "loss_first_token" in h and "lr" in h for h in train_rows)
    assert any(h["kind"] == "eval" and "diag_cross_input_cosine" in h for h in history)
    from seqcomp.system import CompressionSystem

    other = CompressionSystem(apply_overrides(cfg, {"compressor.m": 8}), tiny)
    with pytest.raises(CheckpointError, match=r"shape \(4, 64\) but this config builds \(8, 64\)"):
        load_weights(other, run / "checkpoints" / "best.safetensors")


def test_doctor_blocks_a_broken_setup_unless_asked(tmp_path, tiny):
    from seqcomp.trainer import DoctorFailed

    cfg = key_recall_config(**{"generation.max_new_tokens": 1, "data.n_train": 8, "data.n_test": 4,
                               "data.n_select": 2})
    with pytest.raises(DoctorFailed, match="generation length"):
        train(cfg, tmp_path / "run", lm=tiny, progress=False)


def test_kd_and_first_token_terms_are_logged(tmp_path, tiny):
    cfg = key_recall_config(**{"data.n_train": 16, "data.n_test": 4, "data.n_select": 2, "loss.kd_weight": 0.5,
                               "loss.first_token_weight": 0.5, "loss.k_weight": 0.5})
    run = tmp_path / "run"
    train(cfg, run, lm=tiny, progress=False)
    row = json.loads((run / "history.jsonl").read_text().splitlines()[1])
    assert {"loss_kd", "loss_first_token", "loss_k_token", "loss_ce", "loss_total"} <= set(row)


@pytest.mark.parametrize("override, message", [
    ({"compressor.m": 0}, "compressor.m"),
    ({"compressor.kind": "magic"}, "compressor.kind"),
    ({"nope.key": 1}, "unknown config key"),
    ({"compressor.nope": 1}, "unknown config key"),
    ({"layout.anchor": "  "}, "layout.anchor"),
])
def test_bad_configs_get_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_preset("tier1"), override)


def test_unknown_preset_and_cli_set_strings():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; known presets"):
        get_preset("nope")
    cfg = apply_overrides(get_preset("tier1"), ["compressor.m=16", "layout.end_of_answer=\\n", "model.precision=fp32",
                                                "layout.bos=false", "train.lr=3e-4"])
    assert cfg.compressor.m == 16 and cfg.layout.end_of_answer == "\n" and cfg.layout.bos is False
    assert cfg.train.lr == 3e-4
    with pytest.raises(ConfigError, match="expected a number"):
        apply_overrides(cfg, ["compressor.m=many"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(cfg, ["compressor.m"])


def test_same_config_and_seed_give_identical_predictions(tmp_path, tiny):
    cfg = key_recall_config(**{"data.n_train": 16, "data.n_test": 8, "data.n_select": 4})
    a = train(cfg, tmp_path / "a", lm=tiny, progress=False)
    b = train(cfg, tmp_path / "b", lm=tiny, progress=False)
    assert (a["exact_match"], a["f1"]) == (b["exact_match"], b["f1"])
    assert (tmp_path / "a" / "predictions.jsonl").read_text() == (tmp_path / "b" / "predictions.jsonl").read_text()
    losses = [[json.loads(x).get("loss_total") for x in (tmp_path / r / "history.jsonl").read_text().splitlines()]
              for r in ("a", "b")]
    assert losses[0] == losses[1]


def test_training_on_cuda_leaves_out_cudnn_attention():
    """pytorch/pytorch#196678: cuDNN SDPA backward gives NaN query gradients on H100/H200 (seen on a lent H200 as
    non-finite gradients in encoder-full and text-path training); training on CUDA must not dispatch to it."""
    import torch
    from torch.nn.attention import SDPBackend

    from seqcomp.lm import sdpa_backends

    cuda_training = sdpa_backends(torch.device("cuda"), training=True)
    assert cuda_training and SDPBackend.CUDNN_ATTENTION not in cuda_training
    assert SDPBackend.EFFICIENT_ATTENTION in cuda_training  # masks need a kernel that takes them
    assert sdpa_backends(torch.device("cuda"), training=False) is None  # generation: PyTorch's own choice
    assert sdpa_backends(torch.device("cpu"), training=True) is None
