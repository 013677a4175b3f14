"""Where prunelab's own configs are: the checkout's ``conf/`` folder, else the installed package.

The repository keeps one copy of the configs, in the top-level ``conf/`` folder where users of
a checkout look for them; building a wheel maps that folder into the package as
``prunelab.conf`` (``setup.py``), so an installed prunelab finds the same files through Hydra's
package search path (``pkg://prunelab.conf``). A checkout (editable install, or ``src`` on
``PYTHONPATH``) reads its own ``conf/`` folder directly, so edits there take effect at once.
A user's ``--config-dir`` or ``hydra.searchpath`` adds to either.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

PACKAGE = "prunelab.conf"


def checkout_dir() -> Path | None:
    """``<checkout>/conf`` when this prunelab runs from a source checkout, else ``None``."""
    here = Path(__file__).resolve().parent
    if here.parent.name != "src":
        return None
    conf = here.parents[1] / "conf"
    return conf if (conf / "config.yaml").is_file() else None


def config_path() -> str:
    """``config_path`` for ``hydra.main``: the checkout's folder, or ``pkg://prunelab.conf``."""
    conf = checkout_dir()
    return str(conf) if conf is not None else f"pkg://{PACKAGE}"


def search_path() -> str:
    """The same place as a Hydra search-path entry (``file://...`` or ``pkg://...``)."""
    path = config_path()
    return path if "://" in path else f"file://{path}"


def initialize(job_name: str = "prunelab") -> AbstractContextManager:
    """Hydra's ``initialize_config_*`` for prunelab's configs, for ``compose`` outside the app.

    It registers the schema and resolvers first (:func:`prunelab.config.register`): the configs
    extend the stored ``schema`` node, so a ``compose`` in a process that never started the
    Hydra app would otherwise fail with "Could not load 'schema'"."""
    from hydra import initialize_config_dir, initialize_config_module

    # lazy: prunelab.config imports prunelab.paths, which imports this module (a cycle)
    from prunelab.config import ensure_registered

    ensure_registered()
    conf = checkout_dir()
    if conf is not None:
        return initialize_config_dir(config_dir=str(conf), version_base="1.3", job_name=job_name)
    return initialize_config_module(config_module=PACKAGE, version_base="1.3", job_name=job_name)
