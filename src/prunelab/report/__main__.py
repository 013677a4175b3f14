"""``python -m prunelab.report`` is not a command: say where the command is, rather than do
nothing (the command line is ``prunelab report``, :mod:`prunelab.cli.report`)."""

import sys

sys.stderr.write("python -m prunelab.report: error: a library module, not a command; the command "
                 "is python -m prunelab report ...\n")
sys.exit(2)
