"""The shell commands of README.md and docs/ as test cases (docs/design/testing.md,
"Documented commands").

A fenced code block is a *command block* when its language is a shell's (``bash``, ``sh``,
``shell``, ``console``, ``zsh``) or, unlabelled, when a line of it starts with ``$ `` or
``python -m prunelab``. Each command block carries a marker: an HTML comment on the last
non-blank line before its fence, invisible in the rendered page::

    <!-- doctest: run -->                      run as printed
    <!-- doctest: fast [key=value ...] -->     FAST_OVERRIDES (and these) appended to every
                                               training and search command
    <!-- doctest: skip REASON -->              not run; the reason is required

``run`` and ``fast`` take two more words: ``slow`` (a ``@pytest.mark.slow`` test: ``make
test-all``) and ``sweep:PATH`` (before the block, ``PATH`` holds a copy of a tiny finished
sweep). Placeholders (:data:`PLACEHOLDERS`) become a finished run, a sweep or the data folder.
A block runs as one bash script (``set -e``) in a sandbox checkout; a ``$ command`` block
(``console``, or unlabelled) runs each command and expects each of its output lines.

Text only here (no torch): parsing is cheap, the runs are in ``test_docs_commands.py``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# docs/results/ records past measurements (full data, hours of CPU); its commands are records
EXCLUDED = ("docs/results/",)
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
MODES = ("run", "fast", "skip")
# appended by `fast` to every training and search command: a few batches per epoch
FAST_OVERRIDES: tuple[str, ...] = ("trainer=fast",)
# the subcommands (prunelab.cli.COMMANDS) take these from the first argument; others: training
NO_TRAINING_FLAGS = ("--help", "-h", "--cfg", "-c", "--hydra-help", "--info", "-i",
                     "--shell-completion", "-sc", "--resolve")
TOOLS_WITH_OVERRIDES = ("search",)

MARKER = re.compile(r"^\s*<!--\s*doctest:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
UNLABELLED_COMMAND = re.compile(r"^(\$ |python3? -m prunelab\b)")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PYTHON = re.compile(r"^python[0-9.]*$")
SHELL_SYNTAX = re.compile(r"[;&|]|^\s*(for|while|if|eval)\b|\$\(")

#: text in the docs -> the fixture it stands for (``run``: a finished run folder relative to
#: the sandbox, ``ckpt``: its last.ckpt, ``sweep``: a finished sweep, ``data``: the data folder)
PLACEHOLDERS: tuple[tuple[str, str], ...] = (
    ("outputs/runs/<run>", "run"),
    ("<run dir>", "run"),
    ("<run>", "run"),
    ("path/to/other.ckpt", "ckpt"),
    ("outputs/sweeps/NAME", "sweep"),
    ("/path/to/data", "data"),
    ("/elsewhere/data", "data"),
    ("../shared/data", "data"),
)
#: whole words that stand for a fixture (``...``: "your other overrides", dropped)
WORD_PLACEHOLDERS: tuple[tuple[str, str], ...] = (
    ("RUN", "run"), ("DIR", "run"), ("/data", "data"), ("...", ""),
)


@dataclass(frozen=True)
class Marker:
    mode: str
    slow: bool = False
    overrides: tuple[str, ...] = ()
    sweeps: tuple[str, ...] = ()
    reason: str = ""


@dataclass
class Block:
    path: str  # relative to the checkout
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: Marker | None = None
    marker_error: str = ""
    is_command: bool = False

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def console(self) -> bool:
        return any(ln.startswith("$ ") for ln in self.text.splitlines())


@dataclass
class Doc:
    blocks: list[Block] = field(default_factory=list)
    stray_markers: list[str] = field(default_factory=list)  # "path:line" of unused markers


def parse_marker(text: str) -> Marker:
    """The words of ``<!-- doctest: ... -->``; ValueError for anything unknown."""
    words = text.split()
    if not words or words[0] not in MODES:
        raise ValueError(f"doctest marker {text!r}: the first word must be one of {', '.join(MODES)}")
    mode, rest = words[0], words[1:]
    if mode == "skip":
        if not rest:
            raise ValueError("doctest: skip needs a reason")
        return Marker("skip", reason=" ".join(rest))
    slow, overrides, sweeps = False, [], []
    for w in rest:
        if w == "slow":
            slow = True
        elif w.startswith("sweep:"):
            sweeps.append(w.removeprefix("sweep:"))
        elif "=" in w and mode == "fast":
            overrides.append(w)
        else:
            raise ValueError(f"doctest: {mode}: unknown word {w!r} (slow, sweep:PATH"
                             f"{', key=value' if mode == 'fast' else ''})")
    return Marker(mode, slow, tuple(overrides), tuple(sweeps))


def parse(path: Path, root: Path = ROOT) -> Doc:
    """The fenced blocks of one Markdown file, with their markers."""
    doc = Doc()
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(root).as_posix()
    marker_at: dict[int, str] = {}  # line index of a marker -> its text
    for i, ln in enumerate(lines):
        m = MARKER.match(ln)
        if m:
            marker_at[i] = m.group(1)
    used: set[int] = set()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(2), m.group(3).lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            j += 1
        body = "\n".join(lines[i + 1:j])
        block = Block(rel, i + 1, lang, body)
        block.is_command = lang in SHELL_LANGS or (
            not lang and any(UNLABELLED_COMMAND.match(ln) for ln in body.splitlines()))
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k in marker_at:
            used.add(k)
            try:
                block.marker = parse_marker(marker_at[k])
            except ValueError as err:
                block.marker_error = str(err)
            if not block.is_command:
                block.marker_error = "a doctest marker on a block that is not a command block"
        doc.blocks.append(block)
        i = j + 1
    doc.stray_markers = [f"{rel}:{k + 1}" for k in marker_at if k not in used]
    return doc


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and docs/**/*.md, without :data:`EXCLUDED`."""
    files = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [f for f in files
            if not f.relative_to(root).as_posix().startswith(EXCLUDED)]


def collect(root: Path = ROOT) -> list[Doc]:
    return [parse(f, root) for f in markdown_files(root)]


# --------------------------------------------------------------------------- commands


def strip_comment(line: str) -> str:
    """``line`` without a shell comment (a ``#`` that starts a word, outside quotes)."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def logical_lines(text: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        part = raw.strip() if pending else raw
        if part.rstrip().endswith("\\"):
            pending += part.rstrip()[:-1].rstrip() + " "
            continue
        line = strip_comment(pending + part)
        pending = ""
        if line.strip():
            out.append(line.strip())
    return out


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines and the output lines printed under each."""
    steps: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        if raw.startswith("$ "):
            steps.append((raw[2:].strip(), []))
        elif steps and raw.strip():
            steps[-1][1].append(raw.strip())
    return steps


def prunelab_args(line: str) -> list[str] | None:
    """The arguments after ``prunelab`` / ``python -m prunelab`` of a simple command, else None."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    i = 0
    while i < len(words) and ENV_ASSIGNMENT.match(words[i]):
        i += 1
    if i < len(words) and Path(words[i]).name == "prunelab":
        return words[i + 1:]
    if (i + 2 < len(words) and PYTHON.match(Path(words[i]).name)
            and words[i + 1:i + 3] == ["-m", "prunelab"]):
        return words[i + 3:]
    return None


def subcommand(args: list[str]) -> str:
    """``train``, a tool's name, or ``help`` (``--help``, ``--cfg`` ...: nothing runs)."""
    from prunelab.cli import COMMANDS

    if any(a in NO_TRAINING_FLAGS or a.startswith("--shell-completion") for a in args):
        return "help"
    if args and args[0] in COMMANDS:
        return args[0]
    return "train"


def takes_overrides(line: str) -> bool:
    args = prunelab_args(line)
    return args is not None and subcommand(args) in ("train", *TOOLS_WITH_OVERRIDES)


def with_overrides(line: str, overrides: tuple[str, ...]) -> str:
    """``line`` with ``overrides`` appended when it trains or searches; a compound shell line
    that does either is refused (the end of the line would not be its end)."""
    if not overrides:
        return line
    if SHELL_SYNTAX.search(line):
        if "prunelab" in line and not re.search(r"prunelab (export|report|evaluate|compact|"
                                                r"sensitivity)\b", line):
            raise ValueError(f"cannot append overrides to a compound command: {line}")
        return line
    if takes_overrides(line):
        return f"{line} {' '.join(overrides)}"
    return line


def substitute(text: str, values: dict[str, str]) -> str:
    """Placeholders replaced by ``values`` (shell-quoted); a missing fixture is a KeyError."""
    for placeholder, key in PLACEHOLDERS:
        if placeholder in text:
            text = text.replace(placeholder, shlex.quote(values[key]))
    for word, key in WORD_PLACEHOLDERS:
        pattern = rf"(?<![\w/.$-]){re.escape(word)}(?![\w/.-])"
        if re.search(pattern, text):
            text = re.sub(pattern, shlex.quote(values[key]) if key else "", text)
    return text


def needs(text: str) -> set[str]:
    """The fixtures a block's placeholders stand for (comments aside)."""
    text = "\n".join(logical_lines(text))
    keys = {key for p, key in PLACEHOLDERS if p in text}
    keys |= {key for w, key in WORD_PLACEHOLDERS
             if key and re.search(rf"(?<![\w/.$-]){re.escape(w)}(?![\w/.-])", text)}
    return keys


def script(block: Block, values: dict[str, str]) -> str:
    """The block as a bash script: ``set -e``, each command echoed before it runs."""
    assert block.marker is not None
    overrides = (*FAST_OVERRIDES, *block.marker.overrides) if block.marker.mode == "fast" else ()
    lines = ["set -e"]
    for line in logical_lines(substitute(block.text, values)):
        line = with_overrides(line, overrides)
        lines += [f"printf '%s\\n' {shlex.quote('+ ' + line)} >&2", line]
    return "\n".join(lines) + "\n"


def subcommands(block: Block) -> set[str]:
    """What the block runs: ``train``, tool names, ``help``."""
    text = "\n".join(c for c, _ in console_steps(block.text)) if block.console else block.text
    found = set()
    for line in logical_lines(text):
        for part in re.split(r";|&&|\|\||\bdo\b", line):
            args = prunelab_args(part.strip())
            if args is not None:
                found.add(subcommand(args))
    return found
