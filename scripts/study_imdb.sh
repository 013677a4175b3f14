#!/usr/bin/env bash
# The IMDB pruning study of docs/results/ (experiment=study_imdb), and the reference articles'
# own recipes (experiment=article_imdb, experiment=article_mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NAME=${NAME:-imdb_study}
COMMON=(trainer.enable_progress_bar=false logger=csv)
$PY -m prunelab -m "${COMMON[@]}" name=$NAME experiment=study_imdb pruning=none seed=0
$PY -m prunelab -m "${COMMON[@]}" name=$NAME experiment=study_imdb pruning.schedule.amount=0.5,0.8,0.9 seed=0
$PY -m prunelab -m "${COMMON[@]}" name=$NAME experiment=article_imdb
$PY -m prunelab -m "${COMMON[@]}" name=article_mnist experiment=article_mnist
$PY -m prunelab report outputs/sweeps/$NAME
