#!/usr/bin/env bash
# The one prepared GPU run: install, a compile/smoke step, then K1, the GPU tests compiled, E2 and E1.
#
#   OUT=/tmp/gpu-out bash bench/gpu.sh        # here: no CUDA -> CPU code paths at --quick sizes
#   bash bench/gpu.sh                         # on the device machine ($OUT is the folder that comes back)
#
# $OUT receives gpu.log (everything printed), results/{smoke,k1,e2,e1,gpu}-<device>-<date>.json and
# triton-cache.tgz. Fail-soft and budgeted: every step gets min(its limit, what is left of BUDGET seconds (default
# 540) counted from the start); a step with under 10 s left is skipped; the merged gpu-*.json is rewritten after every
# step, so a step that dies or times out (exit 124) leaves every earlier figure plus its own error (step_errors: the
# last lines it printed). Steps (ORDER, default "smoke k1 pytest e2 e1") and limits in seconds (GPU / CPU defaults):
#   smoke  T_SMOKE  60/60   bench/smoke.py: every kernel family compiled and checked in its own child process;
#                          the failed ones are exported as CORRSTEER_DISABLE_KERNELS for every later step
#   k1     T_K1   200/200   bench/bench_k1.py (its worker processes; the strategy comparison is the only place
#                          the experimental switches CORRSTEER_TUNE_FUSED_N / CORRSTEER_TOPK_STRATEGY=auto are set;
#                          K1_ARGS: extra arguments, e.g. "--only gemma --entry-timeout 60")
#   pytest T_PYTEST 130/120 GPU_TESTS compiled; PYTEST_WORKERS (default 8 where pytest-xdist imports, 0 = none)
#   e2     T_E2   100/150   e1 T_E1 50/150
# Every step runs even when an earlier one failed; the exit status is 1 when any failed. A carried .gpu/tokenizer
# directory is used for the tokenizer (the device has no network); .gpu/commit may hold the commit id when the copy
# has no .git. Test-only: CORRSTEER_FAULT=FAMILY[:raise|abort|kill|hang] makes one kernel family fail
# (corrsteer_kernels._common.fault_point); python3 -m bench.fault_runs runs this script so, once per family.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT/results"
LOG="$OUT/gpu.log"
: > "$LOG"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${BUDGET:-540}
log() { echo "[gpu.sh +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
left() { echo $(( START + BUDGET - $(date +%s) )); }
cap() { local l; l=$(left); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }   # min(limit, budget left)

STEPS=()
PYTEST_LINE=""
merge() {   # the merged JSON, rewritten after every step (never aborts)
  python3 -m bench.merge_results "$OUT/results" --steps "${STEPS[@]}" --pytest "$PYTEST_LINE" \
    --step-logs "$OUT" --meta-file "$OUT/.meta.json" --quiet 2>&1 | tee -a "$LOG" || log "merge_results failed"
}
step() {   # step NAME LIMIT CMD...: run within min(LIMIT, budget left), output to the terminal and the log; never aborts
  local name=$1 limit=$2 rc; shift 2
  STEP_OUT="$OUT/.step-$name.txt"   # removed at the end (only gpu.log and results/ come back)
  limit=$(cap "$limit")
  if [ "$limit" -lt 10 ]; then
    log "== $name: SKIPPED (${limit}s of the ${BUDGET}s budget left)"
    STEPS+=("$name=skipped"); merge; return
  fi
  log "== $name (limit ${limit}s): $*"
  set +e
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG" "$STEP_OUT"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 124 ] && log "$name: TIMED OUT after ${limit}s"
  log "== $name: exit $rc"
  STEPS+=("$name=$rc")
  merge
}

# ---- environment --------------------------------------------------------------------------------------------
if [ -d .gpu/tokenizer ]; then
  export CORRSTEER_BENCH_TOKENIZER=$PWD/.gpu/tokenizer CORRSTEER_TEST_TOKENIZER=$PWD/.gpu/tokenizer
fi
if [ -f .gpu/commit ]; then   # the device's copy may carry a .git of another commit: the carried id wins
  export CORRSTEER_GIT_COMMIT="$(cat .gpu/commit)"
fi
unset TRITON_INTERPRET   # the GPU tests must run compiled, not in the interpreter
# compiled kernels persist in .gpu/triton-cache when that folder travels; a tarball of it comes back in $OUT
mkdir -p .gpu/triton-cache && export TRITON_CACHE_DIR=$PWD/.gpu/triton-cache
[ -f .gpu/triton-cache.tgz ] && tar xzf .gpu/triton-cache.tgz -C .gpu && log "unpacked a carried Triton cache"

use_pythonpath() {   # import the project from this tree without installing it (corrsteer_kernels is in kernels/)
  export PYTHONPATH="$PWD:$PWD/kernels${PYTHONPATH:+:$PYTHONPATH}"
}
installed_here() {
  python3 - "$PWD" <<'EOF' 2>/dev/null
import os, sys
import corrsteer, corrsteer_kernels
root = os.path.realpath(sys.argv[1])
ok = all(os.path.realpath(m.__file__).startswith(root + os.sep) for m in (corrsteer, corrsteer_kernels))
sys.exit(0 if ok else 1)
EOF
}
if [ "${CORRSTEER_NO_PIP:-0}" = 1 ]; then
  use_pythonpath
  log "CORRSTEER_NO_PIP=1: importing from $PWD through PYTHONPATH"
elif installed_here; then
  log "corrsteer already installed from $PWD (editable)"
else
  log "pip install --no-deps --no-build-isolation -e ."
  if ! python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tee -a "$LOG" || ! installed_here; then
    log "pip install failed: using PYTHONPATH instead"
    use_pythonpath
  fi
fi

{ command -v nvidia-smi >/dev/null && nvidia-smi -L && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader; } 2>&1 | tee -a "$LOG" || true
set +e
python3 - "$OUT/.meta.json" <<'EOF' 2>&1 | tee -a "$LOG"
import datetime, json, platform, sys, torch, transformers
try:
    import triton; tv = triton.__version__
except ImportError:
    tv = None
import corrsteer_kernels
print(f"python {platform.python_version()}  torch {torch.__version__} (cuda {torch.version.cuda})  triton {tv}  "
      f"transformers {transformers.__version__}  corrsteer_kernels from {corrsteer_kernels.__file__}")
print("cuda available:", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
from bench.common import device_name, device_slug   # the merged JSON's meta until a step writes its own
dev = "cuda" if torch.cuda.is_available() else "cpu"
json.dump(dict(device=device_name(dev), device_kind=device_slug(dev), date=datetime.date.today().isoformat(),
               torch=torch.__version__, triton=tv, transformers=transformers.__version__), open(sys.argv[1], "w"))
EOF
[ "${PIPESTATUS[0]}" = 0 ] || log "version check failed (see above)"
set -e

has_cuda() {   # from the version check's meta file (no second torch import), else torch
  local kind
  kind=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['device_kind'])" "$OUT/.meta.json" \
    2>/dev/null) || kind=""
  [ -n "$kind" ] && { [ "$kind" != cpu ]; return; }
  python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
}
if has_cuda; then
  BENCH_ARGS=()
  T_SMOKE=${T_SMOKE:-60}; T_K1=${T_K1:-200}; T_PYTEST=${T_PYTEST:-130}; T_E2=${T_E2:-100}; T_E1=${T_E1:-50}
  log "CUDA: full GPU sizes"
else
  BENCH_ARGS=(--device cpu --quick)
  T_SMOKE=${T_SMOKE:-60}; T_K1=${T_K1:-200}; T_PYTEST=${T_PYTEST:-120}; T_E2=${T_E2:-150}; T_E1=${T_E1:-150}
  # the kernels' own tests run the Triton interpreter here (minutes on 2 cores, and part of the normal test run):
  # only the device tests, which skip or run their CPU half
  GPU_TESTS=${GPU_TESTS:-"tests/kernels/test_gpu.py tests/model/test_generate_device.py tests/pipeline/test_collect_device.py"}
  log "no CUDA: CPU code paths at --quick sizes"
fi
if [ -z "${CORRSTEER_BENCH_TOKENIZER:-}" ]; then
  log "WARNING: no .gpu/tokenizer: E2/E1 need the default model's converted directory (no network on the device)"
fi

# ---- tests, compiled ----------------------------------------------------------------------------------------
GPU_TESTS=${GPU_TESTS:-"tests/kernels/test_gpu.py tests/kernels/test_packed.py tests/model/test_generate_device.py tests/pipeline/test_collect_device.py tests/kernels/test_encode_pool.py tests/kernels/test_encode_pool_stats.py tests/kernels/test_steer_add.py tests/kernels/test_topk_kernel.py tests/kernels/test_tokens_n_kernel.py tests/kernels/test_combine_kernel.py tests/kernels/test_prepared.py"}
PYTEST_LINE=""
XDIST=()   # the GPU tests are mostly Triton compiles: spread them over the device machine's cores when xdist is there
if [ -n "${PYTEST_WORKERS:-}" ] || python3 -c "import xdist" 2>/dev/null; then
  if [ "${PYTEST_WORKERS:-8}" != 0 ]; then XDIST=(-n "${PYTEST_WORKERS:-8}"); fi
fi
for s in ${ORDER:-smoke k1 pytest e2 e1}; do
  case $s in
    smoke)
      rm -f "$OUT/.disabled"
      step smoke "$T_SMOKE" python3 -m bench.smoke ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} --out-dir "$OUT/results" \
        --end-at "$(( $(date +%s) + $(cap "$T_SMOKE") - 15 ))" --disabled-file "$OUT/.disabled" \
        --meta-file "$OUT/.meta.json"
      OFF=$(cat "$OUT/.disabled" 2>/dev/null || true)
      if [ -n "$OFF" ]; then
        export CORRSTEER_DISABLE_KERNELS="${CORRSTEER_DISABLE_KERNELS:+$CORRSTEER_DISABLE_KERNELS,}$OFF"
        log "kernel families switched off for the later steps: $CORRSTEER_DISABLE_KERNELS"
      fi ;;
    pytest)   # shellcheck disable=SC2086
      step pytest "$T_PYTEST" python3 -m pytest -q -rf --tb=short -p no:cacheprovider ${XDIST[@]+"${XDIST[@]}"} $GPU_TESTS
      PYTEST_LINE=$(grep -E " in [0-9.]+s" "$OUT/.step-pytest.txt" | tail -n 1 || true)
      merge ;;
    k1)
      # shellcheck disable=SC2086
      step k1 "$T_K1" python3 -m bench.bench_k1 ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} --out-dir "$OUT/results" \
        --end-at "$(( $(date +%s) + $(cap "$T_K1") - 20 ))" ${K1_ARGS:-} ;;
    e2|e1)
      T_VAR="T_${s^^}"
      step "$s" "${!T_VAR}" python3 -m "bench.bench_$s" ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} --out-dir "$OUT/results" ;;
    *) log "unknown step $s (ORDER takes smoke k1 pytest e2 e1)" ;;
  esac
done

# ---- summary ---------------------------------------------------------------------------------------------------
python3 -m bench.merge_results "$OUT/results" --steps "${STEPS[@]}" --pytest "$PYTEST_LINE" --step-logs "$OUT" \
  --meta-file "$OUT/.meta.json" 2>&1 | tee -a "$LOG" || true
log "steps: ${STEPS[*]}"
log "pytest: $PYTEST_LINE"
rm -f "$OUT"/.step-*.txt "$OUT/.disabled" "$OUT/.meta.json"
tar czf "$OUT/triton-cache.tgz" -C .gpu triton-cache 2>/dev/null || true
ls -l "$OUT" "$OUT/results" | tee -a "$LOG"
FAILED=0
for s in "${STEPS[@]}"; do [ "${s#*=}" = 0 ] || FAILED=1; done
log "done in $(( $(date +%s) - START ))s; failed steps: $FAILED"
exit "$FAILED"
