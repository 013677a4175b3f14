"""prunelab's command line: the training app and its subcommands.

``prunelab <group=option ...> <key=value ...>`` (or ``python -m prunelab ...``) composes the
Hydra config and trains, prunes and tests one run, or a sweep with ``-m``
(:mod:`prunelab.cli.train`). ``prunelab <command> ...`` runs one of :data:`COMMANDS` instead
(:mod:`prunelab.cli.commands`: adding one is one line there).

Library code lives outside this package (:mod:`prunelab.report`, :mod:`prunelab.search`,
:mod:`prunelab.export` ...), so everything a command does is also callable from Python.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from prunelab.cli.commands import COMMANDS, command_module, command_summary
from prunelab.renamed import UNTIL

__all__ = ["COMMANDS", "EXIT_BROKEN_PIPE", "command_module", "command_summary", "main",
           "old_module_form"]

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command whose reader closed


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: a subcommand by its name, else the Hydra training app.

    Hydra reads ``sys.argv`` itself, so its flags (``--help``, ``-m``, ``--cfg``,
    ``--shell-completion`` ...) reach it untouched.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            if args and args[0] in COMMANDS:
                sys.exit(command_module(args[0]).main(args[1:]))
            # lazy: the training app imports Hydra and registers its config, which no
            # subcommand needs
            from prunelab.cli.train import main as train

            train()
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's shutdown
    except BrokenPipeError:
        # the reader went away (``prunelab ... | head``): stop quietly, as ``cat`` does, with
        # the shell's status for SIGPIPE; nothing more can be printed to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_BROKEN_PIPE)


def old_module_form(command: str) -> NoReturn:
    """``python -m prunelab.<command> ...``, the command line of 0.1: one deprecation line, then
    ``prunelab <command> ...`` with the same arguments."""
    print(f"warning: deprecated: python -m prunelab.{command} is now python -m prunelab {command} "
          f"(the old form {UNTIL})", file=sys.stderr)
    main([command, *sys.argv[1:]])
    sys.exit(0)  # main exits with the command's status; this line is never reached
