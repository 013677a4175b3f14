"""The subcommands: ``prunelab <command> ...`` → the module that runs it, and what it does.

A command is a module with ``main(argv: list[str]) -> int`` (the exit status) and a docstring
whose first line, after the ``prunelab <command> ...`` usage, says what it does (shown by
``prunelab --help``). Adding one is one line in :data:`COMMANDS`. This module imports none of
them: ``--help`` reads their docstrings from the source.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from types import ModuleType

#: subcommand name -> module with ``main(argv) -> int``; every other first argument goes to Hydra
COMMANDS: dict[str, str] = {
    "evaluate": "prunelab.cli.evaluate",
    "compact": "prunelab.cli.compact",
    "export": "prunelab.cli.export",
    "report": "prunelab.cli.report",
    "search": "prunelab.cli.search",
    "sensitivity": "prunelab.cli.sensitivity",
}


def command_module(name: str) -> ModuleType:
    """The module of subcommand ``name`` (imported on first use: most pull in torch)."""
    return importlib.import_module(COMMANDS[name])


def _docstring(name: str) -> str | None:
    """The command module's docstring, read from its source without importing it: ``--help``
    and Hydra's config resolution run before a sweep's jobs set their thread limits, and an
    import of torch there would fix the thread pool too early."""
    loaded = sys.modules.get(COMMANDS[name])
    spec = None if loaded is not None else importlib.util.find_spec(COMMANDS[name])
    if spec is None or spec.origin is None:
        return command_module(name).__doc__
    with open(spec.origin, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read()))


def command_summary(name: str) -> str:
    """One line on what subcommand ``name`` does: its module docstring's first sentence."""
    doc = " ".join((_docstring(name) or "").strip().split("\n\n")[0].split())
    doc = re.sub(r"^``[^`]+``:\s*", "", doc)  # not the usage again
    doc = re.sub(r"``([^`]+)``", r"\1", doc)
    m = re.search(r"(?<=[.!?])\s", doc)
    return (doc[: m.start()] if m else doc).rstrip(".")
