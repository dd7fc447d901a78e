#!/usr/bin/env bash
# GPU path, ready to prove: one script that measures the GPU goals on one NVIDIA H200 in under
# 8 minutes with no network, and prints ONE Markdown table (each row: measured, goal, met).
#
#   bench/gpu.sh                 the GPU machine: install from bench/wheels, then every stage
#   bench/gpu.sh --smoke         tiny sizes on a CPU (same code paths; also HARNESS_BENCH_SMOKE=1)
#   bench/gpu.sh --fetch-wheels  a machine with PyPI: fill bench/wheels (ignored by git) for the GPU one
#
# Stages, each under `timeout` within one overall budget (BENCH_BUDGET_S, default 460 s), so a slow or
# broken stage costs its own row ("skipped: reason") and never the others:
#   tests  the CUDA path of the unit tests (tests/test_cuda.py, tests/test_determinism.py); goal: all pass
#   dann   DANN step at 256 images per domain, backbones small / resnet18 / resnet50: (a) the harness's
#          `dann` on device-resident data (bf16), (b) pytorch-adapt's stock loop + DataLoader (fp32),
#          (c) the bare backbone forward+backward; goal (a)/(c) >= 0.9     (bench/gpu_step.py)
#   knn    knn_search over a 1M-entry bank vs a contrastive_knn step; goal < 5%  (bench/gpu_step.py)
#   score  score_set throughput of a fresh ResNet18 (a stored run's model if BENCH_WORK holds one from
#          an earlier e2e); goal >= 1M cutouts/min (bench/score_throughput.py)
#   e2e    python -m harness run --method all --preset full --seeds 0,1,2; goal < 3 min (last: it
#          gets what the budget has left, at most its cap)
#
# The GPU machine has torch, torchvision, pandas, scikit-learn, seaborn, pyarrow, pyyaml, tqdm; the rest
# comes from bench/wheels: `pip install --target` into the work folder, put first on PYTHONPATH (so
# torchmetrics 0.9.3 shadows the machine's newer one), then the checkout itself with
# `pip install --no-index --find-links bench/wheels --no-deps -e .`. Nothing installs torch.
# Environment: PYTHON (interpreter; default .venv/bin/python if present, else python3), BENCH_WORK
# (work folder; default a new temporary one, removed at the end unless BENCH_KEEP=1), BENCH_OUT (copy
# the table, the stage JSON and a tarball of the logs there; default $OUT where it is set).
set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
WHEELS=$REPO/bench/wheels
SMOKE=${HARNESS_BENCH_SMOKE:-0}
FETCH=0
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    --fetch-wheels) FETCH=1 ;;
    *) echo "usage: bench/gpu.sh [--smoke | --fetch-wheels]" >&2; exit 2 ;;
  esac
done
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python
else PY=python3; fi
log() { echo "[gpu.sh $(date +%H:%M:%S)] $*" >&2; }

# ------------------------------------------------------------------ wheels for the GPU machine
if [ "$FETCH" = 1 ]; then
  # cp312 manylinux x86_64: the GPU machine's Python. One version of each package, no dependencies.
  mkdir -p "$WHEELS"
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" \
    pytorch-adapt==0.0.83 torchmetrics==0.9.3 pytorch-metric-learning==1.6.3 astropy==8.0.2 \
    pyerfa==2.0.1.5 astropy-iers-data==0.2026.11.2.0.34.55 pyxdg==0.28 setuptools==80.10.2 || exit 1
  # lenstronomy is an sdist on PyPI: build its pure-Python wheel here.
  "$PY" -m pip wheel --no-deps -w "$WHEELS" lenstronomy==1.14.2 || exit 1
  if [ "${WITH_FAISS:-0}" = 1 ]; then   # not needed on CUDA (knn_search uses torch there without faiss-gpu)
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 -d "$WHEELS" faiss-cpu==1.15.1 || exit 1
  fi
  ls -l "$WHEELS"/*.whl >&2
  du -sh "$WHEELS" >&2
  exit 0
fi

# ------------------------------------------------------------------ work folder, budget, stages
if [ -n "${BENCH_WORK:-}" ]; then W=$BENCH_WORK; mkdir -p "$W"; OWN_W=0
else W=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bench.XXXXXX"); OWN_W=1; fi
[ "$OWN_W" = 1 ] && [ "${BENCH_KEEP:-0}" != 1 ] && trap 'rm -rf "$W"' EXIT
T0=$SECONDS
if [ "$SMOKE" = 1 ]; then BUDGET=${BENCH_BUDGET_S:-260}; else BUDGET=${BENCH_BUDGET_S:-460}; fi
RESERVE=10   # seconds kept for the table

stage() {   # stage NAME CAP_SECONDS COMMAND...: run under timeout, record "rc seconds limit" in W/NAME.rc
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - (SECONDS - T0) - RESERVE))
  local limit=$((cap < left ? cap : left))
  if ((limit < 5)); then
    echo "budget 0 0" >"$W/$name.rc"
    log "$name: skipped, the budget is spent"
    return 1
  fi
  log "$name: up to ${limit} s: $*"
  local t1 t2 rc secs
  t1=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" >"$W/$name.log" 2>&1
  rc=$?
  t2=$(date +%s.%N)
  secs=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.1f", b - a }')
  echo "$rc $secs $limit" >"$W/$name.rc"
  log "$name: rc $rc after ${secs} s"
  [ "$rc" = 0 ] || tail -n 3 "$W/$name.log" | sed 's/^/    /' >&2
  return "$rc"
}

# ------------------------------------------------------------------ install (GPU machine only)
IMPORTS="import harness, methods, pytorch_adapt, lenstronomy, astropy, torchmetrics"
install() {
  local site=$W/site wheels=()
  for f in "$WHEELS"/*.whl; do
    [ -e "$f" ] || continue
    case $(basename "$f") in torch-*|torchvision-*|nvidia_*) continue ;; esac   # never torch
    wheels+=("$f")
  done
  if [ "${#wheels[@]}" = 0 ]; then
    echo "no wheels in bench/wheels (run bench/gpu.sh --fetch-wheels where PyPI is reachable)"
    return 1
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${wheels[@]}" \
    || return 1
  # setuptools 80 from the wheels builds the checkout (the project pins <81): first on PYTHONPATH here too
  PYTHONPATH="$site" "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps \
    --no-build-isolation --no-cache-dir -e "$REPO" \
    || echo "editable install failed; the checkout stays on PYTHONPATH"
  PYTHONPATH="$site:$REPO" "$PY" -c "$IMPORTS; print('torchmetrics', torchmetrics.__version__)"
}
if [ "$SMOKE" = 1 ]; then
  log "smoke mode: no install"
elif "$PY" -c "$IMPORTS" >/dev/null 2>&1; then
  log "the harness and its dependencies import: install skipped"
else
  export -f install
  export PY WHEELS REPO W IMPORTS
  stage install 90 bash -c install || log "install failed; the stages below will say what is missing"
  export PYTHONPATH="$W/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi

# ------------------------------------------------------------------ the stages
E2E_STORE=$W/e2e/harness.db
mkdir -p "$W/e2e"
if [ "$SMOKE" = 1 ]; then
  # one thread each: on a shared 2-core machine, two-thread ops stall on a busy core
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
  DEV=(--device cpu)
  DANN=(--batch 8 --size 16 --n 32 --smoke)
  KNN=(--bank 5000 --queries 8 --backbone small --size 16 --smoke)
  E2E_METHODS=source_only
  E2E=(-m harness run --method "$E2E_METHODS" --preset smoke --seeds 0 --device cpu)
  E2E_SEEDS=1
  SCORE=(--backbone tiny --n 512 --batch 64 --chunk 256)   # a fresh ResNet18 is too slow for a CPU smoke
  CAPS=(45 20 80 30 90)
  export HARNESS_TEST_ACCEL=cpu   # the CUDA tests' logic, on the CPU
else
  DEV=(--device auto)
  DANN=(--batch 256 --size 64 --n 4096)
  KNN=(--bank 1000000 --queries 256 --backbone resnet18 --size 64)
  E2E_METHODS=all
  E2E=(-m harness run --method "$E2E_METHODS" --preset full --seeds 0,1,2)
  E2E_SEEDS=3
  SCORE=(--backbone resnet18 --n 32768 --batch 512 --chunk 4096)
  CAPS=(100 40 185 45 90)
fi
BACKBONES=small,resnet18,resnet50

stage tests "${CAPS[4]}" "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_determinism.py
stage dann "${CAPS[0]}" "$PY" -m bench.gpu_bench dann --json "$W/dann.json" --backbones "$BACKBONES" \
  "${DEV[@]}" "${DANN[@]}"
stage knn "${CAPS[1]}" "$PY" -m bench.gpu_bench knn --json "$W/knn.json" "${DEV[@]}" "${KNN[@]}"
stage score "${CAPS[3]}" "$PY" -m bench.score_throughput "${SCORE[@]}" "${DEV[@]}" \
  --store "$E2E_STORE" --run auto --tmp "$W" --json "$W/score.json"
stage e2e "${CAPS[2]}" "$PY" "${E2E[@]}" --store "$E2E_STORE" --datasets-dir "$W/e2e/ds"
if [ -f "$W/e2e.rc" ] && ! grep -q '^budget' "$W/e2e.rc"; then
  read -r rc secs limit <"$W/e2e.rc"
  timeout 60 "$PY" -m bench.gpu_bench e2e --json "$W/e2e.json" --store "$E2E_STORE" --log "$W/e2e.log" \
    --command "python ${E2E[*]}" --methods "$E2E_METHODS" --seeds "$E2E_SEEDS" --seconds "$secs" --rc "$rc" \
    --limit "$limit" \
    >>"$W/e2e.log" 2>&1 || log "e2e summary failed (see e2e.log)"
fi

# ------------------------------------------------------------------ the table
TABLE_ARGS=(--dir "$W" --backbones "$BACKBONES")
[ "$SMOKE" = 1 ] && TABLE_ARGS+=(--smoke)
timeout 30 "$PY" -m bench.gpu_bench table "${TABLE_ARGS[@]}" | tee "$W/table.md"
log "done in $((SECONDS - T0)) s (budget ${BUDGET} s); work folder $W"
DEST=${BENCH_OUT:-${OUT:-}}
if [ -n "$DEST" ]; then
  mkdir -p "$DEST"
  cp "$W"/table.md "$W"/*.json "$DEST"/ 2>/dev/null
  (cd "$W" && tar czf "$DEST/logs.tar.gz" ./*.log ./*.rc 2>/dev/null)
fi
exit 0
