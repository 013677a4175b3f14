#!/usr/bin/env bash
# The MNIST pruning study of docs/results/ (experiment=study_mnist: 8 epochs of
# one-cycle SGD, 5 pruning steps at the ends of epochs 2-6 rising linearly to the target, 1
# fine-tuning epoch): dense baselines; global magnitude, layer-wise L1 and random unstructured.
# Relaunching resumes: finished jobs are skipped, interrupted ones continue from last.ckpt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NAME=${NAME:-mnist_study}
N_JOBS=${N_JOBS:-2}
COMMON=(experiment=study_mnist name=$NAME trainer.enable_progress_bar=false logger=csv
        hydra/launcher=joblib hydra.launcher.n_jobs=$N_JOBS)
METHODS=global_magnitude,l1_unstructured,random_unstructured

# the sweep report's grid: dense baselines, then 3 methods x 4 sparsities x 3 seeds
$PY -m prunelab -m "${COMMON[@]}" pruning=none seed=0,1,2
$PY -m prunelab -m "${COMMON[@]}" seed=0,1,2 pruning/method=$METHODS \
    pruning.schedule.amount=0.5,0.8,0.9,0.95
# the high-sparsity end (seed 0)
$PY -m prunelab -m "${COMMON[@]}" seed=0 pruning/method=$METHODS pruning.schedule.amount=0.98,0.99
# the same budget with a cubic (AGP) schedule from 60 %: gentler final steps at high sparsity
$PY -m prunelab -m "${COMMON[@]}" seed=0 pruning=agp pruning.schedule.initial=0.6 \
    pruning/method=global_magnitude pruning.schedule.amount=0.98,0.99
$PY -m prunelab -m "${COMMON[@]}" seed=1,2 pruning=agp pruning.schedule.initial=0.6 \
    pruning/method=global_magnitude pruning.schedule.amount=0.98
$PY -m prunelab report outputs/sweeps/$NAME --out docs/results/mnist_study --delta 0.1
