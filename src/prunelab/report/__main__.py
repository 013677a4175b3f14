"""``python -m prunelab.report ...``, the command line of 0.1: ``prunelab report ...``, with one
deprecation line, until the next release."""

from prunelab.cli import old_module_form

old_module_form("report")
