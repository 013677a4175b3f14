"""The earlier name of :mod:`prunelab.curves` (per-epoch curves, metrics.csv and TensorBoard, that
survive resumes); it works until the next release, with one warning."""

from prunelab import curves
from prunelab.renamed import alias

alias(__name__, curves)
