"""The shape of the source: small files, and ARCHITECTURE.md's map kept true.

No file under ``src/`` is longer than :data:`MAX_LINES` (a module has one job; a longer one is
split by job). ARCHITECTURE.md's layer table places every module, and no module imports from a
layer above its own; its module list has a line for every module. Reads text only (``ast``),
no torch: a fraction of a second.
"""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

from test_import_graph import PACKAGE, SCRIPT, graph, module_names

from conftest import ROOT

MAX_LINES = 500
SRC = ROOT / "src"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
CODE = re.compile(r"`([^`]+)`")


def too_long(root: Path = SRC, limit: int = MAX_LINES) -> list[str]:
    """``path: N lines`` for every Python file under ``root`` longer than ``limit`` lines."""
    out = []
    for f in sorted(root.rglob("*.py")):
        n = len(f.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{f.relative_to(root.parent).as_posix()}: {n} lines")
    return out


def test_no_source_file_is_longer_than_500_lines() -> None:
    long = too_long()
    assert not long, (f"split these by job (at most {MAX_LINES} lines a file):\n"
                      + "\n".join(long))


def test_the_size_check_finds_a_long_file(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "ok.py").write_text("x = 1\n" * MAX_LINES)
    (pkg / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert too_long(tmp_path / "src") == [f"src/pkg/long.py: {MAX_LINES + 1} lines"]


# ------------------------------------------------------------------ ARCHITECTURE.md's map


def path_of(module: str) -> str:
    """``prunelab.pruning.callback`` → ``pruning/callback``; a package → ``pkg/__init__``."""
    f = module_names()[module]
    return f.relative_to(PACKAGE).with_suffix("").as_posix()


def layer_table(text: str) -> list[list[str]]:
    """The module patterns of each row of the ``| layer | modules |`` table, bottom layer first."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| layer | modules |"))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(CODE.findall(ln.split("|")[2]))
    return rows


def layer_of(path: str, rows: list[list[str]]) -> int | None:
    """The row whose patterns match ``path`` (``cli/*`` holds ``cli/__init__`` and every module
    under ``cli/``)."""
    for i, patterns in enumerate(rows):  # a module named in a row wins over a ``pkg/*``
        if path in patterns:
            return i
    for i, patterns in enumerate(rows):
        if any(p.endswith("/*") and fnmatch(path, p[:-2] + "/*") for p in patterns):
            return i
    return None


def layer_problems(text: str) -> list[str]:
    """Modules the table does not place, and imports from a layer above the importer's."""
    rows = layer_table(text)
    modules = module_names()
    layer = {m: layer_of(path_of(m), rows) for m in modules}
    problems = [f"{path_of(m)}: in no row of the layer table" for m, i in sorted(layer.items())
                if i is None]
    for m, targets in sorted(graph(modules).items()):
        for t, where in sorted(targets.items()):
            if all(function == SCRIPT for _, function in where):
                continue  # ``if __name__ == "__main__":`` runs as a command: the top layer
            if None not in (layer[m], layer[t]) and layer[t] > layer[m]:
                problems.append(f"{path_of(m)} (layer {layer[m] + 1}) imports {path_of(t)} "
                                f"(layer {layer[t] + 1})")
    return problems


def unlisted_modules(text: str) -> list[str]:
    """Modules (packages' ``__init__`` aside) that the ``## Modules`` section does not name."""
    section = text.split("\n## Modules", 1)[1].split("\n## ", 1)[0]
    named = set(CODE.findall(section))
    paths = (path_of(m) for m in module_names())
    return sorted(p for p in paths if not p.endswith("__init__") and p not in named)


def test_the_layer_table_places_every_module_and_imports_go_down() -> None:
    problems = layer_problems(ARCHITECTURE.read_text(encoding="utf-8"))
    assert not problems, "ARCHITECTURE.md's layer table:\n" + "\n".join(problems)


def test_architecture_has_a_line_for_every_module() -> None:
    missing = unlisted_modules(ARCHITECTURE.read_text(encoding="utf-8"))
    assert not missing, f"ARCHITECTURE.md's Modules section does not name {missing}"


def test_the_map_checks_find_a_missing_module_and_an_upward_import() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    # errors.py in the command-line row: every module that imports it now imports upwards
    moved = text.replace("| facts | `__init__`, `errors`,", "| facts | `__init__`,").replace(
        "| command line | `cli/*`,", "| command line | `errors`, `cli/*`,")
    assert moved != text
    assert any(p.startswith("io (layer 1) imports errors (layer 6)") for p in layer_problems(moved))
    assert "pruning/compaction" in unlisted_modules(text.replace("`pruning/compaction` —", "—"))
    assert layer_problems(text.replace("`pruning/compaction`, ", "")) == [
        "pruning/compaction: in no row of the layer table"]
