"""``python -m prunelab.export ...``, the command line of 0.1: ``prunelab export ...``, with one
deprecation line, until the next release."""

from prunelab.cli import old_module_form

old_module_form("export")
