"""The earlier name of :mod:`prunelab.internals` (every workaround on private torch and Lightning
internals); it works until the next release, with one warning."""

from prunelab import internals
from prunelab.renamed import alias

alias(__name__, internals)
