#!/usr/bin/env bash
# Regenerate the records' generated tables and plot: docs/results/records/records.md and
# records.png, from the record presets' run folders (every one of seeds 0-4, and the mean).
#
#   docs/results/records/make_records.sh [ROOT ...]      # default root: outputs/sweeps
#
# Every results.json under the roots is read; a run whose command line is experiment=<preset>
# plus only seed/threads/name/verbosity/quantize belongs to that preset, so seeds run in several
# sweeps or checkouts pool. The IMDB goal needs the dense reference runs too:
#   python -m prunelab -m experiment=study_imdb pruning=none trainer.max_epochs=5 seed=0,1,2,3,4
# Python: $PYTHON (default: python), with prunelab importable.
set -euo pipefail
cd "$(dirname "$0")/../../.."
roots=("$@")
if [ ${#roots[@]} -eq 0 ]; then roots=(outputs/sweeps); fi
exec "${PYTHON:-python}" scripts/make_records.py --roots "${roots[@]}" --out docs/results/records
