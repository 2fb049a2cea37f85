#!/usr/bin/env bash
# One device command: run benchmark steps in order until a deadline, each step bounded by the
# time left, so that one slow step cannot take the whole call (and the steps after it) down.
#
#   bash benchmarks/gpu_session.sh SECONDS 'step 1' 'step 2' ...
#
# Wheels for packages the GPU image lacks travel in .whl/ (see the device README); the log and
# every results/*.json a step writes land under $OUT.
set -u
deadline=$(( $(date +%s) + $1 )); shift
export GPU_SESSION_DEADLINE=$deadline  # benchmarks fit their budgets to it (benchmarks.common)
out=${OUT:-/tmp/gpu_session_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
  git log -1 --format='commit %H' 2>/dev/null; date -u; } | tee -a "$out/log.txt"
for step in "$@"; do
  left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt 20 ]; then echo "=== skipped, ${left} s left: $step" | tee -a "$out/log.txt"; continue; fi
  echo "=== $(date -u +%T) start ($left s left): $step" | tee -a "$out/log.txt"
  start=$(date +%s)
  timeout --signal=INT --kill-after=15 "$left" bash -c "$step" 2>&1 | tee -a "$out/log.txt"
  echo "=== rc ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s: $step" | tee -a "$out/log.txt"
done
