#!/usr/bin/env bash
# Regenerate the records' tables and plots: docs/results/records/records.md and one report
# folder per group (lenet_unstructured, lenet_structured, mnist_methods, mnist_all, imdb).
#
#   docs/results/records/make_records.sh [SWEEPS_ROOT ...]      # default root: outputs/sweeps
#
# Every root is searched for the records' sweeps (rec0, rec_99, rec_99_5, rec_moon, rec_struct,
# records_methods, rec_imdb, rec_imdb_dense); runs of one configuration found under several
# roots are pooled (mean ± std over all their seeds). A sweep that is not there yet is noted in
# records.md and left out. Python: $PYTHON (default: python), with prunelab importable.
# Dense MNIST baseline: the sweep rec_dense if present (e.g. `python -m prunelab -m
# experiment=lenet5_99 pruning=none seed=0,1,2 name=rec_dense`, the presets' 40 epochs), else
# the MNIST study's dense runs (8 epochs, 3 seeds) from docs/results/mnist_study/summary.csv.
set -euo pipefail
cd "$(dirname "$0")/../../.."
roots=("$@")
if [ ${#roots[@]} -eq 0 ]; then roots=(outputs/sweeps); fi
exec "${PYTHON:-python}" scripts/make_records.py --roots "${roots[@]}" \
    --out docs/results/records --mnist-baseline docs/results/mnist_study/summary.csv
