"""The earlier name of :mod:`prunelab.messages` (prunelab's console and log messages, and
verbosity); it works until the next release, with one warning."""

from prunelab import messages
from prunelab.renamed import alias

alias(__name__, messages)
