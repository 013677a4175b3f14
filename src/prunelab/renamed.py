"""Names of the previous release that keep working for this one, each with one warning.

A renamed module keeps a file under its old name whose import is the new module itself
(:func:`alias`: the same module object, so its attributes, a test's monkeypatch and
``isinstance`` agree) and warns once, at the line that imported it, with a ``FutureWarning``
(Python shows those by default; a ``DeprecationWarning`` from a user's own module is hidden).
A renamed config-group option (:data:`OPTIONS`) keeps a YAML that includes the new one, is left
out of listings, and the command line says so in one line (:mod:`prunelab.choices`). A
component's renamed key is :mod:`prunelab.legacy`'s, like every other earlier spelling.
"""

from __future__ import annotations

import sys
import warnings
from types import ModuleType

#: how long an old name keeps working (the end of every deprecation line)
UNTIL = "works until the next release"

#: config group → {old option: new option}; each old option keeps a YAML that includes the new
OPTIONS: dict[str, dict[str, str]] = {
    "experiment": {"seed_mnist": "article_mnist", "seed_imdb": "article_imdb"},
}


def alias(old: str, new: ModuleType) -> None:
    """``import <old>`` gives ``new`` from now on; the first import says so, once."""
    # stacklevel 3: the line that imported the old module (the import machinery is skipped)
    warnings.warn(f"{old} is now {new.__name__} (the old name {UNTIL})", FutureWarning, stacklevel=3)
    sys.modules[old] = new


def option_note(group: str, option: str) -> str | None:
    """The deprecation line of a renamed group option, or None for a current one."""
    new = OPTIONS.get(group, {}).get(option)
    return None if new is None else f"{group}={option} is now {group}={new} (the old name {UNTIL})"


def current(group: str, options: list[str]) -> list[str]:
    """``options`` without the old names of renamed ones (what listings and hints show)."""
    old = OPTIONS.get(group, {})
    return [o for o in options if o not in old]
