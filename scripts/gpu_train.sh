#!/bin/bash
# Train catcomp models on the lent GPU under Keras' PyTorch backend.
# usage: bash scripts/gpu_train.sh BUDGET_S NAME:CATEGORY:CROP:BATCH:LR ...
# Each job fine-tunes .gpu/models/CATEGORY on .gpu/data/CATEGORY/train; all jobs
# share the GPU. A 150-step probe (run together) sets each job's step count so
# that its cosine schedule ends 150 s before BUDGET_S; at BUDGET_S-30 every job
# is stopped and the weights its checkpoint saved at the end of training come back.
set -u
T0=$(date +%s); BUDGET=$1; shift
t() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
t installed
train() { # name cat crop batch lr steps out
  python3 -c 'from catcomp.cli import main; main()' train $2 --data .gpu/data --init .gpu/models/$2 --steps $6 --gan-steps 0 --crop $3 --batch $4 --lr $5 --out $7 --checkpoint-minutes 2
}
for j in "$@"; do IFS=: read n c cr b lr <<< "$j"; train $n $c $cr $b $lr 150 /tmp/probe_$n > /tmp/probe_$n.log 2>&1 & done; wait
t probed
for j in "$@"; do
  IFS=: read n c cr b lr <<< "$j"
  ms=$(grep -o '[0-9]*ms/step' /tmp/probe_$n.log | tail -1 | tr -dc 0-9)
  if [ -z "$ms" ]; then echo "probe $n failed:"; tail -30 /tmp/probe_$n.log; continue; fi
  left=$(( T0 + BUDGET - 150 - $(date +%s) ))
  steps=$(( left * 1000 / ms ))
  t "$n: probe ${ms} ms/step, ${left} s left -> $steps steps"
  train $n $c $cr $b $lr $steps /tmp/run_$n > $OUT/$n.log 2>&1 &
done
while [ $(date +%s) -lt $(( T0 + BUDGET - 30 )) ] && [ -n "$(jobs -r)" ]; do sleep 2; done
t stopping; kill $(jobs -p) 2>/dev/null
for j in "$@"; do
  IFS=: read n rest <<< "$j"
  cp /tmp/run_$n/checkpoint/rd/model.weights.h5 $OUT/$n.weights.h5
  cp /tmp/run_$n/checkpoint/rd/state.json $OUT/$n.state.json
  grep -v "^ *\[\|^ *\.\.\.\|^$" $OUT/$n.log | tail -3
done
t done
