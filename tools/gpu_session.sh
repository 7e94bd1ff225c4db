#!/usr/bin/env bash
# The one prepared command of a lent-GPU session (see the model card and docs/PERFORMANCE.md).
#
#   bash tools/gpu_session.sh DATA OUT TRAIN_SECONDS
#
# DATA holds roadscene/train, roadscene/test and msrs/train (copies of shared/data, which
# does not travel to the GPU machine). It
#   1. benchmarks the inference paths on the GPU (`ivfusion bench --device cuda`);
#   2. times 40 steps of each training configuration below, all running side by side (the
#      network is far too small to fill the GPU alone), and turns the measured rate into a
#      step count that fits TRAIN_SECONDS;
#   3. trains the configurations side by side for that many steps, each a plain
#      `ivfusion train` command that is written to OUT/commands.txt exactly as it ran;
#   4. packs each run folder (weights, log, curves, resume state) as OUT/run-NAME.tar.
set -u
DATA=${1:?data folder}
OUT=${2:?output folder}
BUDGET=${3:-300}
export PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu EXTRA="--crop 32 --batch-size 2" BENCH=0: a quick dry run on a CPU
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

# 1. inference on the GPU: reference vs fast vs fast-bf16, 256x256 and 640x480, batch 1
[ "${BENCH:-1}" = 1 ] && timeout 120 $PY -m ivfusion bench --device $DEVICE --runs 50 --warmup 10 --metrics-repeats 0 \
  --pairs "$DATA/roadscene/test" --pairs "$DATA/msrs/train" --json "$OUT/bench-cuda.json" \
  || echo "bench failed ($?)"

# 2-3. training configurations: name | flags (data, validation, seed and device are common)
COMMON="--data $DATA/roadscene/train $DATA/msrs/train --device $DEVICE --threads 3 --seed 0 --log-every 20"
declare -A CFG=(
  [paper]="--crop 128 --batch-size 16 --lr 1e-4"
  [finetune]="--init assets/weights/isfuse-ivfusion --crop 128 --batch-size 16 --lr 3e-4 --lr-schedule cosine --warmup 100"
  [big]="--crop 160 --batch-size 32 --lr 1e-3 --lr-schedule cosine --warmup 200"
  [wide]="--init assets/weights/isfuse-ivfusion --crop 256 --batch-size 16 --lr 2e-4 --lr-schedule cosine --warmup 100"
)
for name in "${!CFG[@]}"; do
  timeout 90 $PY -m ivfusion train $COMMON ${CFG[$name]} $EXTRA --val none --steps 40 --log-every 10 \
    --out "/tmp/probe-$name" >"/tmp/probe-$name.txt" 2>&1 &
done
wait
: >"$OUT/commands.txt"
for name in "${!CFG[@]}"; do
  steps=$($PY - "$name" "$BUDGET" <<'EOF'
import json, sys
name, budget = sys.argv[1], float(sys.argv[2])
log = {r["step"]: r["time_s"] for r in map(json.loads, open(f"/tmp/probe-{name}/log.jsonl")) if "time_s" in r}
per_step = (log[40] - log[20]) / 20
# validation (8 full-size pairs, metrics on the CPU) takes a few seconds each of 5 times
print(max(100, int((budget - 40) / per_step / 100) * 100))
EOF
  ) || { echo "probe $name failed:"; tail -5 "/tmp/probe-$name.txt"; continue; }
  cmd="$PY -m ivfusion train $COMMON ${CFG[$name]} $EXTRA --val $DATA/roadscene/test --val-pairs 8 --val-every $((steps / 5)) --steps $steps --out runs/gpu-$name"
  echo "$cmd" | tee -a "$OUT/commands.txt"
  (timeout $((BUDGET + 60)) $cmd >"/tmp/runs-gpu-$name.txt" 2>&1; echo "$name exit $?" >>"/tmp/runs-gpu-$name.txt") &
done
wait
for name in "${!CFG[@]}"; do
  tail -c 300 "/tmp/runs-gpu-$name.txt"
  [ -d "runs/gpu-$name" ] && cp "/tmp/runs-gpu-$name.txt" "runs/gpu-$name/stdout.txt" \
    && tar -cf "$OUT/run-$name.tar" -C runs "gpu-$name"
done
ls -la "$OUT"
