#!/usr/bin/env bash
# On a machine with a CUDA GPU, in under 5 minutes: the CUDA tests, one MNIST epoch on the GPU
# (time, and its ratio to one on this machine's CPU), the pruning overhead on the GPU, and mask
# agreement under DDP across the GPUs present; then a summary.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        (run from the repository root)
#
# Python: $PYTHON, else .venv/bin/python, else python3 (prunelab and its test dependencies
# installed). MNIST: $PRUNELAB_DATA/MNIST/raw when present; otherwise (no network needed) a
# synthetic set of MNIST's exact sizes is written to a temporary folder, which times the same.
# Every step has its own time limit, cut to what is left of the whole check's budget
# ($GPU_CHECK_SECONDS, default 290); a failing step is reported and the others still run.
# The summary is printed and written to OUT_DIR/gpu_check.txt (default: a temporary folder).
# Exit status: 0 when every step passed, 1 when one failed or no CUDA GPU is visible.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-}
[ -z "$PY" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
[ -z "$PY" ] && PY=python3
TMP=$(mktemp -d)
OUT=${1:-$TMP}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: > "$LOG"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONUNBUFFERED=1
SUMMARY=()
FAILED=0
note() { SUMMARY+=("$1"); echo "== $1" | tee -a "$LOG"; }
fail() { FAILED=$((FAILED + 1)); note "$1"; }
BUDGET=${GPU_CHECK_SECONDS:-290}
lim() {  # $1: the step's own limit in seconds, cut to what is left of BUDGET (at least 1)
  local left=$(( T0 + BUDGET - $(date +%s) ))
  [ "$left" -lt 1 ] && left=1
  echo $(( $1 < left ? $1 : left ))
}
json() { "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null; }  # FILE EXPR
T0=$(date +%s)

echo "gpu_check $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname)" | tee -a "$LOG"
# fail fast: one interpreter start says whether there is anything to check
if ! PROBE=$("$PY" -c "import torch; print(int(torch.cuda.is_available()), torch.__version__, torch.version.cuda)" 2>&1); then
  echo "gpu_check: $PY cannot import torch (${PROBE##*$'\n'}); set PYTHON to the interpreter prunelab is installed in" >&2
  exit 1
fi
read -r HAS_CUDA TORCH_V CUDA_V <<<"$PROBE"
if [ "$HAS_CUDA" != 1 ]; then
  echo "gpu_check: no CUDA GPU visible to $PY (torch $TORCH_V, built for CUDA $CUDA_V; torch.cuda.is_available() is False): nothing to check" >&2
  exit 1
fi
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")
VERS=$("$PY" -c "import torch, lightning; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, lightning {lightning.__version__}')")
note "machine: $NGPU x $GPU, $(nproc) CPU cores; $VERS"

# --------------------------------------------------------------------------- data
DATA=${PRUNELAB_DATA:-$ROOT/data}
if ! ls "$DATA"/MNIST/raw/train-images-idx3-ubyte* >/dev/null 2>&1; then
  DATA=$TMP/data
  "$PY" -c "import sys; sys.path.insert(0, 'tests'); from fakedata import write_fake_mnist; write_fake_mnist(sys.argv[1], n_train=60000, n_test=10000)" "$DATA" >>"$LOG" 2>&1 \
    && note "data: synthetic MNIST-sized set (no MNIST in \$PRUNELAB_DATA)" \
    || fail "data: could not write the synthetic set (see $LOG)"
else
  note "data: MNIST from $DATA"
fi

# --------------------------------------------------------------------------- 1. CUDA tests
CUDA_TESTS=$(grep -l "cuda" tests/test_*.py | tr '\n' ' ')
if timeout "$(lim 90)" "$PY" -m pytest -q -rs -p no:cacheprovider -k "cuda or gpu or fp16" $CUDA_TESTS >"$OUT/cuda_tests.txt" 2>&1; then
  note "CUDA tests: $(tail -1 "$OUT/cuda_tests.txt")"
else
  fail "CUDA tests FAILED or timed out: $(tail -1 "$OUT/cuda_tests.txt") (see $OUT/cuda_tests.txt)"
fi
cat "$OUT/cuda_tests.txt" >> "$LOG"

# --------------------------------------------------------------------------- 2. one epoch
epoch() {  # $1: accelerator; prints the training epoch's seconds (results.json) or nothing
  local dir=$TMP/epoch_$1
  timeout "$(lim 90)" "$PY" -m prunelab pruning=none trainer.max_epochs=1 logger=none \
    trainer.enable_progress_bar=false ckpt_path=null trainer.limit_val_batches=0 \
    trainer.limit_test_batches=0 trainer.accelerator="$1" "data_dir=$DATA" \
    "hydra.run.dir=$dir" >>"$LOG" 2>&1 || return 0
  json "$dir/results.json" "round(r['epoch_seconds'][0], 2)"
}
# a short warm-up run first: CUDA context, cuDNN autotuning and the data cache stay out of it
timeout "$(lim 60)" "$PY" -m prunelab pruning=none trainer.max_epochs=1 logger=none trainer.accelerator=gpu \
  trainer.enable_progress_bar=false ckpt_path=null trainer.limit_train_batches=20 \
  trainer.limit_val_batches=0 trainer.limit_test_batches=0 "data_dir=$DATA" \
  "hydra.run.dir=$TMP/warmup" >>"$LOG" 2>&1
GPU_S=$(epoch gpu)
CPU_S=$(epoch cpu)
if [ -n "$GPU_S" ] && [ -n "$CPU_S" ]; then
  note "MNIST CNN epoch (860 batches of 64, model=cnn): GPU ${GPU_S} s, CPU (this machine) ${CPU_S} s, CPU/GPU $("$PY" -c "print(f'{$CPU_S / $GPU_S:.2f}')")x (README's 2-core VM: 20-35 s)"
else
  fail "MNIST epoch FAILED or timed out: GPU '${GPU_S:-failed}' s, CPU '${CPU_S:-failed}' s (see $LOG)"
fi

# --------------------------------------------------------------------------- 3. pruning overhead
if timeout "$(lim 120)" "$PY" benchmarks/pruning_overhead.py --short --data-dir "$DATA" >"$OUT/overhead.txt" 2>&1; then
  note "pruning overhead on GPU (--short: 200 batches x 10 epochs): $(grep -m1 '^fit iterative / none' "$OUT/overhead.txt")"
else
  fail "pruning overhead FAILED or timed out (see $OUT/overhead.txt)"
fi
cat "$OUT/overhead.txt" >> "$LOG"

# --------------------------------------------------------------------------- 4. DDP masks
if [ "$NGPU" -ge 2 ]; then
  DDP=$TMP/ddp; mkdir -p "$DDP"
  if timeout "$(lim 90)" "$PY" tests/ddp_masks.py "$DDP" random_unstructured gpu "$NGPU" >>"$LOG" 2>&1; then
    AGREE=$("$PY" - "$DDP" "$NGPU" <<'PYEOF'
import sys, torch
out, n = sys.argv[1], int(sys.argv[2])
masks = [torch.load(f"{out}/rank{r}.pt", weights_only=True) for r in range(n)]
same = all(m.keys() == masks[0].keys() and all(torch.equal(m[k].cpu(), masks[0][k].cpu())
           for k in m) for m in masks[1:])
print(f"{'identical' if same else 'DIFFERENT'} on all {n} ranks ({len(masks[0])} masks)")
PYEOF
)
    case "$AGREE" in
      identical*) note "DDP masks (random_unstructured, $NGPU GPUs): $AGREE" ;;
      *) fail "DDP masks (random_unstructured, $NGPU GPUs): ${AGREE:-rank files missing} (see $LOG)" ;;
    esac
  else
    fail "DDP masks on $NGPU GPUs FAILED or timed out (see $LOG)"
  fi
else
  note "DDP masks: skipped (1 GPU; needs 2 or more)"
fi

# --------------------------------------------------------------------------- summary
{
  echo
  echo "gpu_check summary ($(( $(date +%s) - T0 )) s, $(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname)):"
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
  if [ "$FAILED" -eq 0 ]; then echo "  all steps passed"; else echo "  $FAILED step(s) FAILED"; fi
  echo "  full log: $LOG"
} | tee "$OUT/gpu_check.txt"
[ "$FAILED" -eq 0 ]
