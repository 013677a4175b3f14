"""prunelab's command line: the training app and its subcommands.

``prunelab <group=option ...> <key=value ...>`` (or ``python -m prunelab ...``) composes the
Hydra config and trains, prunes and tests one run, or a sweep with ``-m``
(:mod:`prunelab.cli.train`). ``prunelab <command> ...`` runs one of :data:`COMMANDS` instead.

A command is a module with ``main(argv: list[str]) -> int`` (the exit status) and a docstring
whose first line, after the ``prunelab <command> ...`` usage, says what it does (shown by
``prunelab --help``). Adding one is one line in :data:`COMMANDS`. Library code lives outside
this package (:mod:`prunelab.report`, :mod:`prunelab.search`, :mod:`prunelab.export` ...), so
everything a command does is also callable from Python.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Sequence
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
    import ast
    import importlib.util

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


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: a subcommand by its name, else the Hydra training app.

    Hydra reads ``sys.argv`` itself, so its flags (``--help``, ``-m``, ``--cfg``,
    ``--shell-completion`` ...) reach it untouched.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        sys.exit(command_module(args[0]).main(args[1:]))
    from prunelab.cli.train import main as train

    train()
