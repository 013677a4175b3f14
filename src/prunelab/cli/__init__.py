"""prunelab's command line: the training app and its subcommands.

``prunelab <group=option ...> <key=value ...>`` (or ``python -m prunelab ...``) composes the
Hydra config and trains, prunes and tests one run, or a sweep with ``-m``
(:mod:`prunelab.cli.train`). ``prunelab <command> ...`` runs one of :data:`COMMANDS` instead
(:mod:`prunelab.cli.commands`: adding one is one line there).

Library code lives outside this package (:mod:`prunelab.report`, :mod:`prunelab.search`,
:mod:`prunelab.export` ...), so everything a command does is also callable from Python.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from prunelab.cli.commands import COMMANDS, command_module, command_summary
from prunelab.renamed import UNTIL

__all__ = ["COMMANDS", "command_module", "command_summary", "main", "old_module_form"]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: a subcommand by its name, else the Hydra training app.

    Hydra reads ``sys.argv`` itself, so its flags (``--help``, ``-m``, ``--cfg``,
    ``--shell-completion`` ...) reach it untouched.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        sys.exit(command_module(args[0]).main(args[1:]))
    # lazy: the training app imports Hydra and registers its config, which no subcommand needs
    from prunelab.cli.train import main as train

    train()


def old_module_form(command: str) -> NoReturn:
    """``python -m prunelab.<command> ...``, the command line of 0.1: one deprecation line, then
    ``prunelab <command> ...`` with the same arguments."""
    print(f"warning: deprecated: python -m prunelab.{command} is now python -m prunelab {command} "
          f"(the old form {UNTIL})", file=sys.stderr)
    main([command, *sys.argv[1:]])
    sys.exit(0)  # main exits with the command's status; this line is never reached
