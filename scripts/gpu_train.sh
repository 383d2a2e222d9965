#!/bin/bash
# Train catcomp models on the lent GPU under Keras' PyTorch backend.
# usage: bash scripts/gpu_train.sh BUDGET_S NAME:CATEGORY:CROP:BATCH:LR[:GAN_STEPS[:STEPS]] ...
# Each job fine-tunes .gpu/models/CATEGORY on .gpu/data/CATEGORY/train; all jobs
# share the GPU. A 150-step probe (run together) sets each job's rate-distortion
# step count so that its cosine schedule, then GAN_STEPS adversarial steps
# (default 0; counted at twice a probe step, plus 60 s for the table fit
# between the phases), end 150 s before BUDGET_S. At
# BUDGET_S-30 every job is stopped and the weights its last phase's checkpoint
# saved at the end of training come back. A job given STEPS skips the probe
# (which costs about 150 s) and runs that many rate-distortion steps. TRAIN_ARGS
# (e.g. --fp32) is passed to every `catcomp train`.
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
train() { # name cat crop batch lr steps gan_steps out
  python3 -c 'from catcomp.cli import main; main()' train $2 --data .gpu/data --init .gpu/models/$2 --steps $6 --gan-steps $7 --crop $3 --batch $4 --lr $5 --out $8 --checkpoint-minutes 2 ${TRAIN_ARGS:-}
}
for j in "$@"; do
  IFS=: read n c cr b lr g steps <<< "$j"
  [ -z "${steps:-}" ] && train $n $c $cr $b $lr 150 0 /tmp/probe_$n > /tmp/probe_$n.log 2>&1 &
done; wait
t probed
for j in "$@"; do
  IFS=: read n c cr b lr g steps <<< "$j"; g=${g:-0}
  if [ -z "${steps:-}" ]; then
    ms=$(grep -o '[0-9]*ms/step' /tmp/probe_$n.log | tail -1 | tr -dc 0-9)
    if [ -z "$ms" ]; then echo "probe $n failed:"; tail -30 /tmp/probe_$n.log; continue; fi
    left=$(( T0 + BUDGET - 150 - $(date +%s) ))
    [ $g -gt 0 ] && left=$(( left - 60 ))  # the beta=0 model's table fit between the phases
    steps=$(( left * 1000 / ms - 2 * g ))
    t "$n: probe ${ms} ms/step, ${left} s left"
  fi
  t "$n: $steps + $g GAN steps"
  train $n $c $cr $b $lr $steps $g /tmp/run_$n > $OUT/$n.log 2>&1 &
done
while [ $(date +%s) -lt $(( T0 + BUDGET - 30 )) ] && [ -n "$(jobs -r)" ]; do sleep 2; done
t stopping; kill $(jobs -p) 2>/dev/null
for j in "$@"; do
  IFS=: read n c cr b lr g steps <<< "$j"; ph=rd; [ "${g:-0}" -gt 0 ] && ph=gan
  cp /tmp/run_$n/checkpoint/$ph/model.weights.h5 $OUT/$n.weights.h5
  cp /tmp/run_$n/checkpoint/$ph/state.json $OUT/$n.state.json
  [ $ph = gan ] && cp /tmp/run_$n/checkpoint/rd/model.weights.h5 $OUT/$n.beta0.weights.h5
  grep -v "^ *\[\|^ *\.\.\.\|^$" $OUT/$n.log | tail -3
done
t done
