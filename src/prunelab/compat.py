"""The earlier name of :mod:`prunelab.pairing` (which model trains on which data set); it works
until the next release, with one warning."""

from prunelab import pairing
from prunelab.renamed import alias

alias(__name__, pairing)
