#!/usr/bin/env bash
# On a lent GPU machine (references/gpu/README.md): train one member on the films packed into gpu/ by
# references/gpu/pack.py, for at most TRAIN_SECONDS (default 420), then export its best epoch (chosen on the
# tune half) in half precision into $OUT, with the run's log. Extra arguments go to `boneage train`
# (e.g. --set optim.epochs=20).
#   bash references/gpu/train.sh configs/gpu/lite0-hand-299-long.yaml
set -uo pipefail
CONFIG=${1:-configs/gpu/lite0-hand-299-long.yaml}
shift || true
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 BONEAGE_RUNS=${BONEAGE_RUNS:-/tmp/runs}
"$PY" references/gpu/unpack.py gpu/films "$BONEAGE_RUNS/gpu-films" || exit 1
name=$("$PY" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$CONFIG")
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout "${TRAIN_SECONDS:-420}" "$PY" -m boneage_core.cli train --config "$CONFIG" --resume --quiet "$@" 2>&1 \
  | tee "$OUT/train.log"
echo "train exit ${PIPESTATUS[0]} (124: the time box ended it; the best epoch so far is exported)" | tee -a "$OUT/train.log"
"$PY" -m boneage_core.cli export --checkpoint "$BONEAGE_RUNS/$name/best.pt" --out "$OUT/$name.pt" 2>&1 \
  | tee -a "$OUT/train.log"
cp "$BONEAGE_RUNS/$name/log.csv" "$OUT/$name-log.csv" 2>/dev/null
cp "$BONEAGE_RUNS/$name/summary.json" "$OUT/$name-summary.json" 2>/dev/null
ls -la "$OUT"
