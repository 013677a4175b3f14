#!/usr/bin/env bash
# The MNIST pruning study of the README's results section (experiment=study_mnist: 8 epochs of
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

# seed 0 first: the dense baseline and every sparsity of the study
$PY -m prunelab -m "${COMMON[@]}" pruning=none seed=0
$PY -m prunelab -m "${COMMON[@]}" seed=0 pruning/method=$METHODS \
    pruning.amount=0.5,0.8,0.9,0.95,0.98,0.99
# seeds 1 and 2: the four sparsities of the sweep report (mean ± std over 3 seeds)
$PY -m prunelab -m "${COMMON[@]}" pruning=none seed=1,2
$PY -m prunelab -m "${COMMON[@]}" seed=1,2 pruning/method=$METHODS pruning.amount=0.5,0.8,0.9,0.95
$PY -m prunelab.report outputs/sweeps/$NAME
