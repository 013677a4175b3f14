"""Every relative link in the repository's Markdown files points at a file that exists.

A link to a heading of a Markdown file (``file.md#heading`` or ``#heading``) must also name a
heading of that file, by GitHub's anchor rules. Links to web addresses are not followed. Reads
text only: no torch, a fraction of a second.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The Markdown a user reads: top-level files, docs/, benchmarks/, examples/.
DOC_ROOTS = ("docs", "benchmarks", "examples")

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`+[^`]*`+")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def markdown_files(root: Path = ROOT) -> list[Path]:
    files = sorted(root.glob("*.md"))
    for sub in DOC_ROOTS:
        files += sorted((root / sub).rglob("*.md"))
    return files


def _prose_lines(text: str, keep_code: bool = False):
    """(line number, line) for lines outside fenced code blocks, code spans removed unless
    ``keep_code``."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line if keep_code else CODE_SPAN.sub("", line)


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition."""
    found = []
    for n, line in _prose_lines(text):
        found += [(n, m.group(1)) for m in INLINE_LINK.finditer(line)]
        ref = REF_DEF.match(line)
        if ref:
            found.append((n, ref.group(1)))
    return found


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(text, keep_code=True):
        m = HEADING.match(line)
        if not m:
            continue
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # a link keeps its text
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        k = seen.get(slug, 0)
        seen[slug] = k + 1
        out.add(slug if k == 0 else f"{slug}-{k}")
    return out


def broken_links(md: Path) -> list[str]:
    """One line per link of ``md`` that does not resolve, naming the line and the target."""
    text = md.read_text(encoding="utf-8")
    bad = []
    for n, target in links(text):
        if EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        dest = (md.parent / unquote(path_part)).resolve() if path_part else md
        where = f"{md.relative_to(ROOT) if md.is_relative_to(ROOT) else md.name}:{n}: {target}"
        if not dest.exists():
            bad.append(f"{where} (no such file)")
        elif (fragment and dest.suffix == ".md" and dest.is_file()
              and unquote(fragment).lower() not in anchors(dest.read_text(encoding="utf-8"))):
            bad.append(f"{where} (no heading #{fragment} in {dest.name})")
    return bad


def test_the_repository_has_markdown_to_check():
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "benchmarks/README.md", "CHANGELOG.md"} <= names
    assert any(n.startswith("docs/") for n in names)


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(md: Path):
    assert not broken_links(md), "broken links:\n" + "\n".join(broken_links(md))


def test_the_checker_finds_a_broken_link_and_a_missing_heading(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Real heading\n\ntext\n")
    (tmp_path / "img.png").write_bytes(b"")
    md = tmp_path / "README.md"
    md.write_text(
        "# Top\n"
        "[ok](other.md) [ok too](other.md#real-heading) ![plot](img.png) [web](https://x.y/z)\n"
        "[self](#top) `[in code](missing.md)`\n"
        "```\n[in a fence](missing.md)\n```\n"
        "[gone](docs/missing.md) [bad anchor](other.md#no-such-heading)\n"
        "[ref]: nowhere/file.txt\n"
    )
    bad = broken_links(md)
    assert len(bad) == 3, bad
    assert "docs/missing.md (no such file)" in bad[0] and ":7:" in bad[0]
    assert "no heading #no-such-heading" in bad[1]
    assert "nowhere/file.txt (no such file)" in bad[2] and ":8:" in bad[2]


def test_anchors_follow_github_rules():
    text = "# Real speed: compaction\n## The `PruningCallback` on your model\n## Notes\n## Notes\n"
    assert anchors(text) == {"real-speed-compaction", "the-pruningcallback-on-your-model",
                             "notes", "notes-1"}


# ------------------------------------------------------------------ docs paths named in text

#: where a docs page is named in plain text: messages, docstrings, comments, configs, scripts
PATH_MENTION = re.compile(r"(?<![\w/.-])docs/\w[\w./-]*?\.md\b")
MENTION_ROOTS = ("src", "conf", "tests", "scripts", "benchmarks", "examples", "docs")
MENTION_SUFFIXES = {".py", ".yaml", ".yml", ".sh", ".md", ".toml", ".txt"}


def files_naming_docs(root: Path = ROOT) -> list[Path]:
    files = [p for p in root.iterdir() if p.is_file() and p.suffix in MENTION_SUFFIXES | {""}]
    for sub in MENTION_ROOTS:
        files += [p for p in (root / sub).rglob("*")
                  if p.is_file() and p.suffix in MENTION_SUFFIXES and "__pycache__" not in p.parts]
    return sorted(files)


def missing_docs_paths(path: Path, root: Path = ROOT) -> list[str]:
    """``docs/....md`` paths named in ``path``'s text (relative to the checkout) that do not
    exist, as ``file:line: path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return []
    bad = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in PATH_MENTION.finditer(line):
            if not (root / m.group(0)).is_file():
                bad.append(f"{path.relative_to(root).as_posix()}:{n}: {m.group(0)}")
    return bad


def test_every_docs_path_named_in_code_configs_and_docs_exists():
    """A message, docstring, comment or page that names ``docs/x.md`` names a page that is
    there (a moved page leaves no stale name behind)."""
    here = Path(__file__).resolve()
    bad = [b for f in files_naming_docs() if f != here for b in missing_docs_paths(f)]
    assert not bad, "docs paths that do not exist:\n" + "\n".join(bad)


def test_the_mention_check_finds_a_moved_page(tmp_path: Path):
    (tmp_path / "docs" / "guide").mkdir(parents=True)
    (tmp_path / "docs" / "guide" / "cli.md").write_text("# CLI\n")
    src = tmp_path / "mod.py"
    src.write_text('"""Exit statuses: docs/guide/cli.md."""\n# see docs/cli.md, "Exit status"\n'
                   'OUT = "mydocs/x.md"\n')
    assert missing_docs_paths(src, tmp_path) == ["mod.py:2: docs/cli.md"]
