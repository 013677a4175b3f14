"""The earlier name of :mod:`prunelab.cli.compact`, and ``python -m prunelab.compact ...``, the
command line of 0.1 (``prunelab compact ...``); both work until the next release, with one
warning."""

if __name__ == "__main__":
    from prunelab.cli import old_module_form

    old_module_form("compact")
else:
    from prunelab.cli import compact
    from prunelab.renamed import alias

    alias(__name__, compact)
