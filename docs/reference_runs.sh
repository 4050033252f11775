#!/usr/bin/env bash
# The reference measurements of docs/results.md: every row's exact command. M = 32, the same 1,000 dev test
# questions for every system (data.seed 0, data.n_test 1000), 100 disjoint selection questions.
#   bash docs/reference_runs.sh QUEUE [RUNS_DIR]      QUEUE: budget | bos | text | encoder | all
# Finished runs are skipped, so the script can be rerun to complete a partial set.
set -euo pipefail
queue=${1:-all}; R=${2:-runs/ref}
SC=${SEQCOMP:-.venv/bin/seqcomp}
done_run() { [ -f "$1/metrics.json" ]; }
base() { done_run "$R/zs-$1" || $SC baseline "$1" --n 1000 ${2:+--budget $2} --out "$R/zs-$1"; }
train() {  # train PRESET N_TRAIN NAME [--set ...]
  local preset=$1 n=$2 name=$3; shift 3
  done_run "$R/$name" || $SC train --preset "$preset" --set data.n_test=1000 --set data.n_train="$n" --set train.save_every=25 "$@" \
    --out "$R/$name" --overwrite
}
if [ "$queue" = budget ] || [ "$queue" = all ]; then
  base truncate 32; base select 32
  train truncate-trained 2000 truncate-2000; train select-trained 2000 select-2000
  for n in 200 500 1000; do train truncate-trained $n truncate-$n; train select-trained $n select-$n; done
  train truncate-trained 2000 truncate-2000-nobos --set layout.bos=false
  for n in 5000; do train select-trained $n select-$n; train truncate-trained $n truncate-$n; done
fi
if [ "$queue" = bos ] || [ "$queue" = all ]; then
  train text-ceiling 2000 text-2000-nobos --set layout.bos=false
fi
if [ "$queue" = text ] || [ "$queue" = all ]; then
  train text-ceiling 2000 text-2000
  for n in 200 500; do train text-ceiling $n text-$n; done
  base text
  for n in 1000 5000; do train text-ceiling $n text-$n; done
fi
if [ "$queue" = encoder ] || [ "$queue" = all ]; then  # issue 14: pretraining on 3,200 passages, then 2,000 questions
  train encoder 2000 encoder-2000
  train encoder 2000 encoder-2000-anticollapse --set loss.uniformity_weight=0.1 --set loss.slot_diversity_weight=0.1
fi
