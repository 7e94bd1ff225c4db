#!/usr/bin/env bash
# The prepared GPU run for weights v3 (docs/TRAINING.md): the authors' recipe at full scale,
# from scratch (never from best.pth), on both cross-dataset splits, then the gate and fusion
# tables. One command, sized for one H100/H200 and a 10-minute limit.
#
#   bash tools/gpu_v3.sh DATA OUT [STEPS]
#
# DATA holds roadscene/train, roadscene/test and msrs/train (a copy of shared/data).
#   A: train roadscene/train -> choose on msrs/train (pairs 0-14)
#   B: train msrs/train      -> choose on roadscene/train (first 20 pairs)
# Each is then reported on roadscene/test, which neither run chose on.
set -eu
DATA=${1:?data folder}
OUT=${2:?output folder}
STEPS=${3:-3400}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
COMMON="--device cuda --workers 6 --threads 2 --seed 0 --log-every 50 --val-every 400 --val-pairs 15 --steps $STEPS"
$PY -m ivfusion train $COMMON --data "$DATA/roadscene/train" --val "$DATA/msrs/train" --out "$OUT/A-roadscene" &
$PY -m ivfusion train $COMMON --data "$DATA/msrs/train" --val "$DATA/roadscene/train" --out "$OUT/B-msrs" &
wait
for run in A-roadscene B-msrs; do
  for w in best last; do
    $PY tools/gate_stats.py --weights "$OUT/$run/$w" --pairs "$DATA/roadscene/test" --threads 4
  done
done | tee "$OUT/tables.md"
