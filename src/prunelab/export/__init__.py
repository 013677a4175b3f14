"""Compressed, self-contained artifacts of pruned networks (``prunelab export``).

``load(path)`` returns the plain network with its weights; it needs neither Lightning nor
Hydra, never unpickles anything, and checks every size the file declares before allocating.
"""

from prunelab.export.artifact import NETWORKS, decode, encode, load, read, save
from prunelab.export.codecs import ENCODINGS

__all__ = ["ENCODINGS", "NETWORKS", "decode", "encode", "load", "read", "save"]
