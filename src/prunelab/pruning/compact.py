"""The earlier name of :mod:`prunelab.pruning.compaction`; it works until the next release,
with one warning."""

from prunelab.pruning import compaction
from prunelab.renamed import alias

alias(__name__, compaction)
