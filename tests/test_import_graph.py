"""prunelab's own modules import each other without a cycle, and import late only for a reason.

The graph is built from the source (``ast``) with every import of a prunelab module: at module
level AND inside functions. A cycle hidden behind an import inside a function is still a cycle
(the two modules cannot be understood, tested or loaded apart), so both kinds count; a
package's ``__init__`` that its submodules run first is not an edge unless it is imported by
name. ``if TYPE_CHECKING:`` imports are not run and do not count.

An import inside a function is allowed only to keep a heavy or optional dependency out of a
start-up that does without it (torch and Lightning take seconds to import: ``prunelab --help``,
config composition, a command's ``--help``, loading an exported artifact), and it says so: a
``# lazy: <reason>`` comment on its line or on the comment line(s) right above it (one comment
may cover a block of consecutive imports).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "prunelab"
SCRIPT = "__main__"  # the "function" of an import under ``if __name__ == "__main__":``


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """``prunelab.x.y`` -> its file (a package by its ``__init__.py``)."""
    out = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             modules: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's package, up level - 1
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    out = set()
    for name in names:
        while name and name not in modules:  # ``import a.b.c`` of a name inside a module
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def imports(source: str, module: str, is_package: bool, modules: dict[str, Path]
            ) -> list[tuple[str, int, str | None]]:
    """(imported module, line, enclosing function or None) for each import of ``modules``."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        function, up, type_checking = None, node, False
        while up in parents:
            child, up = up, parents[up]
            if function is None and isinstance(up, ast.FunctionDef | ast.AsyncFunctionDef):
                function = up.name
            if isinstance(up, ast.If) and "TYPE_CHECKING" in ast.unparse(up.test):
                type_checking = True
            if (function is None and isinstance(up, ast.If) and child in up.body
                    and ast.unparse(up.test) in ("__name__ == '__main__'", '__name__ == "__main__"')):
                function = SCRIPT
        if not type_checking:
            out += [(t, node.lineno, function) for t in _targets(node, module, is_package, modules)]
    return out


def graph(modules: dict[str, Path]) -> dict[str, dict[str, list[tuple[int, str | None]]]]:
    """module -> imported module -> [(line, function or None)]."""
    edges: dict[str, dict[str, list[tuple[int, str | None]]]] = {m: {} for m in modules}
    for m, f in modules.items():
        for target, line, function in imports(f.read_text(), m, f.name == "__init__.py", modules):
            edges[m].setdefault(target, []).append((line, function))
    return edges


def find_cycle(edges: dict[str, dict[str, object]]) -> list[str] | None:
    """One cycle (``[a, b, ..., a]``) of the directed graph, or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(edges):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges.get(nxt, {}))))
    return None


def _describe(cycle: list[str], edges: dict) -> str:
    return " -> ".join(
        f"{a} (line {edges[a][b][0][0]}{', in ' + edges[a][b][0][1] if edges[a][b][0][1] else ''})"
        for a, b in zip(cycle, cycle[1:], strict=False)) + f" -> {cycle[-1]}"


def test_prunelab_modules_import_each_other_without_a_cycle() -> None:
    modules = module_names()
    edges = graph(modules)
    assert sum(len(v) for v in edges.values()) > 100  # the scan sees the imports
    # an ``if __name__ == "__main__":`` block runs only as ``python -m``, in a module object of
    # its own (``__main__``): its imports cannot close a cycle of the package's modules
    edges = {m: {t: w for t, w in ts.items() if any(f != SCRIPT for _, f in w)}
             for m, ts in edges.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + _describe(cycle, edges)


def test_every_import_inside_a_function_says_why() -> None:
    modules = module_names()
    missing = []
    for m, f in sorted(modules.items()):
        lines = f.read_text().splitlines()
        for _, line, function in imports(f.read_text(), m, f.name == "__init__.py", modules):
            if function not in (None, SCRIPT) and not _has_reason(lines, line):
                missing.append(f"{f.relative_to(SRC)}:{line} ({function}): {lines[line - 1].strip()}")
    assert missing == [], ("import at module level, or give the reason with '# lazy: ...' "
                           "(a heavy or optional dependency a start-up does without):\n"
                           + "\n".join(missing))


def _has_reason(lines: list[str], line: int) -> bool:
    """``# lazy:`` on the import's line, or above it across comments and the imports of the
    same block."""
    i = line - 1
    if "# lazy:" in lines[i]:
        return True
    i -= 1
    while i >= 0:
        text = lines[i].strip()
        if "# lazy:" in text:
            return True
        if not (text.startswith(("#", "from ", "import ")) or text == ""):
            return False
        i -= 1
    return False


def test_the_scan_finds_a_cycle_behind_an_import_inside_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from demo.b import x\n")
    (pkg / "b.py").write_text("x = 1\n\ndef f():\n    from demo import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from demo import a\n")
    modules = module_names(pkg)
    edges = graph(modules)
    assert edges["demo.b"] == {"demo.a": [(4, "f")]} and edges["demo.c"] == {}
    assert find_cycle(edges) in (["demo.a", "demo.b", "demo.a"], ["demo.b", "demo.a", "demo.b"])
    assert find_cycle({"p": {"q": 1}, "q": {}}) is None


def test_the_reason_check_reads_the_comment_above_a_block() -> None:
    src = textwrap.dedent("""\
        def f():
            # lazy: torch
            from x import a
            from x import b
            y = 1
            from x import c
            from x import d  # lazy: Lightning
    """).splitlines()
    assert [_has_reason(src, n) for n in (3, 4, 6, 7)] == [True, True, False, True]


START_UP = """
import sys
import prunelab.choices, prunelab.cli.train, prunelab.hydra_callbacks, prunelab.search
import prunelab.report
from prunelab import cli
for argv in (["--help"], ["compact", "--help"], ["evaluate", "--help"], ["sensitivity", "--help"]):
    sys.argv = ["prunelab", *argv]
    try:
        cli.main(argv if argv[0] != "--help" else None)
    except SystemExit:
        pass
    heavy = [m for m in ("torch", "lightning") if m in sys.modules]
    print(" ".join(argv), "->", ", ".join(heavy) or "neither")
"""


def test_the_command_line_starts_without_torch_or_lightning(tmp_path: Path) -> None:
    """``prunelab --help``, the config's composition and a command's ``--help``: a fresh process
    (``sensitivity`` imports torch at module level: the control that the check sees it)."""
    proc = subprocess.run([sys.executable, "-c", START_UP], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if "->" in ln]
    assert lines == ["--help -> neither", "compact --help -> neither", "evaluate --help -> neither",
                     "sensitivity --help -> torch"], proc.stdout[-3000:]
