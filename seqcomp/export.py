"""``seqcomp export RUN DIR``: a self-contained folder to hand a trained compressor to a colleague.

The folder keeps the run folder's names (``config.json``, ``metrics.json``, ``checkpoints/best.safetensors``, and
``history.jsonl`` / ``diagnostics.json`` / ``doctor.json`` when present), so ``seqcomp.load``, ``seqcomp eval`` and
the widgets read it like the run itself, and adds ``README.md``: a model card generated from those files. The
frozen LM is not copied (the card names it), nor are training state, predictions or other checkpoints. The folder
is built under a temporary name and renamed, so a half-written export never looks complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .api import CHECKPOINT, trained_config
from .config import ExperimentConfig, from_dict
from .lm import HUB_IDS
from .metrics import percent
from .prompts import CONTEXT_LABEL
from .runs import RunFolder, RunFolderError, atomic_write_text
from .slices import SYNTHETIC

MODEL_CARD = "README.md"
SQUAD_HUB_ID = "rajpurkar/squad"


def export_run(run: str | Path, out: str | Path) -> Path:
    """Export finished run ``run`` into the new (or empty) folder ``out``; returns ``out``."""
    run, out = Path(run), Path(out)
    trained_config(run)
    folder = RunFolder(run)
    if not folder.finished:
        raise RunFolderError(f"{run} has not finished ({RunFolder.METRICS} is missing), so there are no test metrics "
                             f"for the model card; finish it with `seqcomp train --resume {run}`")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunFolderError(f"{out} already exists and is not an empty folder; export into a new folder")
    tmp = RunFolder(out.parent / f".{out.name}.export-{os.getpid()}")
    tmp.path.mkdir(parents=True)
    for source in copied_files(folder):
        if source.is_file():
            target = tmp.path / folder.relative(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    run_config = {**folder.read_config(), "exported_from": run.resolve().name}
    tmp.write_config(run_config, record_environment=False)  # keeps the environment the run was trained in
    atomic_write_text(tmp.path / MODEL_CARD, model_card(run_config, folder.read_metrics(), folder.read_history()))
    os.replace(tmp.path, out)
    return out


def copied_files(folder: RunFolder) -> tuple[Path, ...]:
    """What an export keeps of a run folder (under the same names) when present: not the training state, the
    predictions or the other checkpoints."""
    return (folder.metrics_path, folder.weights_path(CHECKPOINT), folder.weights_meta_path(CHECKPOINT),
            folder.history_path("train"), folder.diagnostics_path, folder.doctor_path)


def push_to_hub(folder: str | Path, repo: str, private: bool = False) -> str:
    """Upload an exported folder to the Hugging Face Hub (online users; needs `huggingface-cli login`)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, exist_ok=True, private=private)
    return str(api.upload_folder(folder_path=str(folder), repo_id=repo,
                                 commit_message="seqcomp export: trained compressor and model card"))


def _what_it_is(config: ExperimentConfig) -> str:
    cc = config.compressor
    source = ("token embeddings" if cc.source == "embeddings"
              else f"hidden states after layer {cc.source_layer}")
    read = "passage and question" if cc.compress_question else "passage"
    return {
        "query": f"a cross-attention compressor ({cc.m} learned queries attend over the {read}'s {source} and "
                 f"become {cc.m} vectors)",
        "pool": f"a pooling compressor (the {read}'s {source} are averaged into {cc.m} slots and refined by a "
                f"residual MLP)",
        "encoder": f"a trained copy of the frozen LM's embeddings and first {cc.encoder_layers} layers "
                   f"({'bidirectional' if cc.bidirectional else 'causal'}) reading the {read}, its last states "
                   f"averaged into {cc.m} slots and projected by a residual MLP",
        "text": "no compressor (the full passage as text: the trained text-path ceiling)",
        "truncate": f"no compressor (the first {cc.m} passage tokens as text: the trained truncation baseline)",
        "select": f"no compressor (the {cc.m} passage tokens that best match the question, as text: the trained "
                  f"question-aware selection baseline)",
    }[cc.kind]


def _front_matter(config: ExperimentConfig, data_source: str) -> str:
    """Hub metadata: the base model and data set when they have hub ids."""
    lines = ["---", "library_name: seqcomp", "tags: [seqcomp, context-compression, question-answering]"]
    base = HUB_IDS.get(config.model.name)
    if base:
        lines.append(f"base_model: {base}")
    if data_source != SYNTHETIC:
        lines.append(f"datasets: [{SQUAD_HUB_ID}]")
    return "\n".join([*lines, "---"])


def _ci(value: float, ci: list) -> str:
    return f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def _number(value: float | None, unit: str = "") -> str:
    """A metric that older runs may lack shows as n/a."""
    return "n/a" if value is None else f"{value:.1f}{unit}"


def _results(metrics: dict) -> str:
    return "\n".join([
        "| test questions | EM [95% CI] | F1 [95% CI] | first-token accuracy | mean answer tokens |",
        "|---|---|---|---|---|",
        f"| {metrics['n']} | {_ci(metrics['exact_match'], metrics['exact_match_ci'])} | "
        f"{_ci(metrics['f1'], metrics['f1_ci'])} | {_number(percent(metrics.get('first_token_accuracy')), '%')} | "
        f"{_number(metrics.get('mean_pred_tokens'))} |",
    ])


def _budget(config: ExperimentConfig, metrics: dict, history: list[dict]) -> str:
    t = config.train
    steps = max((r["step"] for r in history), default=0)
    select = ("the test slice itself (the diagnosed bug B7)" if config.data.select_on_test
              else "disjoint from the test slice")
    lines = [f"- training questions: {metrics.get('n_train', 'n/a')}, {t.epochs} epoch(s) of batch {t.batch_size} "
             f"({steps} steps), AdamW lr {t.lr:g} (warmup {t.warmup_frac:g}, cosine), seed {t.seed}",
             f"- checkpoint: best selection F1 on {metrics.get('n_select', 'n/a')} questions, {select}, "
             f"at step {metrics.get('best_step', 'n/a')}",
             f"- training time: {metrics.get('train_seconds', 'n/a')} s"]
    if config.pretrain.passages:
        lines.append(f"- pretraining: {config.pretrain.passages} passages (reconstruction + continuation)")
    return "\n".join(lines)


HEADS = {"query": "the {m} compressed slots", "pool": "the {m} compressed slots", "encoder": "the {m} compressed slots",
         "text": f"'{CONTEXT_LABEL} <passage>\\n' as text",
         "truncate": f"'{CONTEXT_LABEL}', the first {{m}} passage tokens, '\\n'",
         "select": f"'{CONTEXT_LABEL}', the {{m}} passage tokens that best match the question, '\\n'"}


def _layout(config: ExperimentConfig) -> str:
    """The LM input the card's reader should picture: ``[head][BOS?][question?][anchor]`` as build_prefix makes it."""
    lay, gen = config.layout, config.generation
    parts = [HEADS[config.compressor.kind].format(m=config.compressor.m)]
    if lay.bos:
        parts.append("BOS")
    if lay.question_as_text:
        parts.append(repr(lay.question_template))
    if lay.anchor:
        parts.append(f"anchor {lay.anchor!r} ({'trained soft prompt' if lay.train_anchor else 'text'})")
    end = f"answers end with {lay.end_of_answer!r}" if lay.end_of_answer else "no end-of-answer token"
    return f"{', '.join(parts)}; {end}; greedy decoding, at most {gen.max_new_tokens} new tokens"


def _trained_parts(config: ExperimentConfig) -> str:
    parts = ["the compressor"] if config.compressor.kind in ("query", "pool", "encoder") else []
    if config.layout.anchor and config.layout.train_anchor:
        parts.append("the answer anchor (a soft prompt)")
    return " and ".join(parts) or "nothing"


def _trained_verb(config: ExperimentConfig) -> str:
    return "were" if " and " in _trained_parts(config) else "was"


def _frozen_lm(config: ExperimentConfig) -> str:
    hub = f" ({HUB_IDS[config.model.name]})" if config.model.name in HUB_IDS else ""
    precision = "bf16 autocast" if config.model.precision == "bf16" else "fp32"
    return f"`{config.model.name}`{hub}, run in {precision}. Its input: {_layout(config)}."


def _data(source: str, metrics: dict, config: ExperimentConfig) -> str:
    what = ("synthetic key-recall questions (a smoke test, not SQuAD)" if source == SYNTHETIC
            else f"SQuAD v1.1 (Rajpurkar et al., 2016; CC BY-SA 4.0), read from `{source}`")
    return f"{what}; {metrics.get('n_train', 'n/a')} training questions, data seed {config.data.seed}."


def _provenance(run_config: dict) -> str:
    env = run_config.get("environment", {})
    packages = env.get("packages", {})
    return (f"Exported from run `{run_config['exported_from']}`; seqcomp {packages.get('seqcomp', 'n/a')}, "
            f"git commit {env.get('git_commit') or 'n/a'}, torch {packages.get('torch', 'n/a')}, "
            f"transformers {packages.get('transformers', 'n/a')}.")


HOW_TO_LOAD = """```python
import seqcomp

system = seqcomp.load("path/to/this/folder")  # also loads the frozen LM named above
slots = system.compress(["passage ..."])        # [1, M, D] compressed slots
print(system.answer("passage ...", "question?"))
```

`seqcomp eval path/to/this/folder --n 300` re-evaluates it on the config's test slice. From the Hub:
`huggingface_hub.snapshot_download(REPO)`, then `seqcomp.load` on the folder it returns."""

FILES = """`config.json` (resolved config and environment), `checkpoints/best.safetensors` (the trained weights, no
pickle), `metrics.json`, `history.jsonl` (loss terms, lr, selection metrics and collapse diagnostics per step),
`diagnostics.json`, `doctor.json` (the setup checks run before training)."""


def model_card(run_config: dict, metrics: dict, history: list[dict]) -> str:
    """README.md for an export: what the compressor is, the frozen LM, data, budget, EM/F1 with CIs, how to load."""
    config = from_dict(run_config["experiment"])
    source = run_config["data_source"]
    sections = [
        (f"# seqcomp compressor: {config.name}",
         f"A trained system for a **frozen** causal LM: {_what_it_is(config)}. The frozen LM reads the result "
         f"through `inputs_embeds` and answers a question about the passage. Only {_trained_parts(config)} "
         f"{_trained_verb(config)} trained; the LM's weights are unchanged and not included."),
        ("## Frozen LM", _frozen_lm(config)),
        ("## Data", _data(source, metrics, config)),
        ("## Training budget", _budget(config, metrics, history)),
        ("## Results (test slice, best checkpoint)",
         _results(metrics) + "\n\n95% bootstrap confidence intervals over questions; EM/F1 as in the official "
         "SQuAD v1.1 script."),
        ("## How to load", HOW_TO_LOAD),
        ("## Files", FILES),
        ("## Provenance", _provenance(run_config)),
    ]
    body = "\n\n".join(f"{title}\n\n{text}" for title, text in sections)
    return f"{_front_matter(config, source)}\n\n{body}\n"
