"""``python -m prunelab``: the same command line as ``prunelab`` (see :mod:`prunelab.cli`)."""

from prunelab.cli import main

if __name__ == "__main__":
    main()
