"""The user's own allowed import prefixes: ``--allow-target PREFIX`` and $PRUNELAB_ALLOW_TARGETS.

Every tool that builds something a file names (a run folder's saved config, an export
artifact's network) builds prunelab's own classes only, plus what starts with one of these
prefixes. One implementation for all of them; it imports nothing heavy (loading an artifact
must not need Hydra or OmegaConf).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

#: env var with extra allowed prefixes, comma-separated (as ``--allow-target``)
ALLOW_ENV = "PRUNELAB_ALLOW_TARGETS"


def allowed_prefixes(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The user's own allowed prefixes: ``extra`` (``--allow-target`` values) and $PRUNELAB_ALLOW_TARGETS."""
    env = [p.strip() for p in os.environ.get(ALLOW_ENV, "").split(",") if p.strip()]
    return tuple(p for p in (*extra, *env) if p)


def is_allowed(target: str, extra: Iterable[str] = ()) -> bool:
    """Whether the user allowed ``target`` (a dotted import path) by one of their prefixes."""
    prefixes = allowed_prefixes(extra)
    return bool(prefixes) and target.startswith(prefixes)


def allow_prefix(target: str) -> str:
    """The ``--allow-target`` prefix that admits ``target``: its module."""
    return target.rsplit(".", 1)[0]


def how_to_allow(target: str) -> str:
    """The end of a refusal: how to allow ``target``'s module if it is trusted."""
    module = allow_prefix(target)
    return f"--allow-target {module} (or {ALLOW_ENV}={module})"
