"""prunelab's configs; installed as the package ``prunelab.conf`` (Hydra's ``pkg://`` source)."""
