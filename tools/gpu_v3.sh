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
# Both are then reported on roadscene/test and on msrs/train pairs 15-29, which neither chose on
# (B trained on all of msrs/train, so for B the second table is in-domain).
set -eu
DATA=${1:?data folder}
OUT=${2:?output folder}
STEPS=${3:-3400}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
# A dry run of the script on a CPU (a few minutes):
#   DEVICE=cpu WORKERS=0 EXTRA="--batch-size 2 --crop 64" bash tools/gpu_v3.sh DATA /tmp/dry-out 2
COMMON="--device ${DEVICE:-cuda} --workers ${WORKERS:-6} --threads 2 --seed 0 --log-every 50 --val-every 400 --val-pairs 15 --steps $STEPS ${EXTRA:-}"
$PY -m ivfusion train $COMMON --data "$DATA/roadscene/train" --val "$DATA/msrs/train" --out "$OUT/A-roadscene" &
A=$!
$PY -m ivfusion train $COMMON --data "$DATA/msrs/train" --val "$DATA/roadscene/train" --out "$OUT/B-msrs" &
B=$!
wait $A || { echo "training A (roadscene -> msrs) failed" >&2; exit 1; }
wait $B || { echo "training B (msrs -> roadscene) failed" >&2; exit 1; }
# the tables: each run's chosen weights against v2 (and the authors' checkpoint if AUTHORS
# points at it) on the two report sets, neither of which chose a checkpoint:
# roadscene/test, and msrs/train from pair 15 on (A chose on pairs 0-14; B trained on them)
W="--weights $OUT/A-roadscene/best --weights $OUT/B-msrs/best --weights assets/weights/isfuse-ivfusion"
[ -n "${AUTHORS:-}" ] && W="$W --weights $AUTHORS"
{ $PY tools/gate_stats.py $W --pairs "$DATA/roadscene/test" --threads 8
  $PY tools/gate_stats.py $W --pairs "$DATA/msrs/train" --skip 15 --threads 8; } | tee "$OUT/tables.md"
