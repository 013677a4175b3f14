"""Every documented command runs as printed, in a real process; so do the commands a run prints.

The command blocks of README.md and docs/ (``tests/doccommands.py``; markers and placeholders
in docs/design/testing.md) run as bash scripts in a sandbox checkout with tiny data, each in fresh
processes: the console script ``prunelab`` or ``python -m prunelab``, exactly as a user types
them. A run of a model of your own (``--config-dir``, ``PYTHONPATH``) prints its next commands;
each is run as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from inprocess import prunelab_in_process

import doccommands as D
from conftest import ROOT
from fakedata import fake_text_records, write_fake_imdb, write_fake_mnist, write_text_csv

DOCS = D.collect()
BLOCKS = [b for d in DOCS for b in d.blocks if b.is_command]
RUN_DIR = "outputs/runs/example"  # the finished run that `<run>` stands for
SWEEP_DIR = "outputs/sweeps/example"  # the finished sweep of `outputs/sweeps/NAME`
#: what the own-model run and its printed next commands run (test_printed_next_command_runs)
NEXT_COMMANDS_RUN = {"train", "evaluate", "report", "compact", "export"}
#: slow next commands: compact traces and times the network (15 s of CPU), export encodes it
SLOW_NEXT = {"compact", "export"}


def _groups() -> list[list[D.Block]]:
    """The blocks to run; identical ones (same commands and marker) run once."""
    groups: dict[tuple, list[D.Block]] = {}
    for b in BLOCKS:
        if b.marker is not None and not b.marker_error and b.marker.mode != "skip":
            groups.setdefault((b.text, b.marker), []).append(b)
    return list(groups.values())


GROUPS = _groups()


def _norm(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Sandbox:
    root: Path  # a checkout's folder as the docs assume it: examples/, docs/results/*.csv
    env: dict[str, str]
    data: Path  # PRUNELAB_DATA: tiny MNIST and IMDB in the real formats


def _console_script_imports_another_prunelab(env: dict[str, str]) -> bool:
    """Whether the installed ``prunelab`` script, without PYTHONPATH, imports another checkout's
    prunelab than the one under test (a worktree next to an editable install)."""
    import prunelab

    probe = subprocess.run([sys.executable, "-c", "import prunelab; print(prunelab.__file__)"],
                           env={k: v for k, v in env.items() if k != "PYTHONPATH"},
                           cwd="/", capture_output=True, text=True, timeout=60)
    return Path(probe.stdout.strip() or "/nonexistent") != Path(prunelab.__file__)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    import prunelab

    root = tmp_path_factory.mktemp("checkout")
    data = tmp_path_factory.mktemp("docdata")
    # large enough for the default validation splits (MNIST 5,000, IMDB 2,500), tiny otherwise
    write_fake_mnist(data, n_train=5320, n_test=200)
    write_fake_imdb(data, n_per_class=1300, as_tar=True)
    shutil.copytree(ROOT / "examples", root / "examples",
                    ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    for csv in (ROOT / "docs" / "results").rglob("summary.csv"):
        dest = root / csv.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(csv, dest)
    home = root / ".home"  # ~/mylab/data of the docs lands here
    home.mkdir()
    path = [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    env = {**os.environ, "HOME": str(home), "PRUNELAB_DATA": str(data), "MPLBACKEND": "Agg",
           "PYTHONUNBUFFERED": "1",
           "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR",
                                          str(Path.home() / ".config" / "matplotlib"))}
    if _console_script_imports_another_prunelab(env):
        # the console script's two lines, importing the prunelab under test
        bindir = root / ".bin"
        bindir.mkdir()
        shim = bindir / "prunelab"
        src = str(Path(prunelab.__file__).parents[1])
        shim.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {src!r})\n"
                        "from prunelab.cli import main\nsys.exit(main())\n")
        shim.chmod(0o755)
        path.insert(0, str(bindir))
    env["PATH"] = os.pathsep.join(path)
    return Sandbox(root, env, data)


@pytest.fixture(scope="module")
def doc_run(sandbox: Sandbox) -> str:
    """A finished structured run (not compacted), for the docs' ``outputs/runs/<run>``."""
    proc = prunelab_in_process("pruning=one_shot", "pruning/method=ln_structured",
                               "pruning.amount=0.5", *D.FAST_OVERRIDES, "data.val_size=200",
                               f"data_dir={sandbox.data}", f"hydra.run.dir={RUN_DIR}",
                               "verbosity=quiet", cwd=sandbox.root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return RUN_DIR


@pytest.fixture(scope="module")
def doc_sweep(sandbox: Sandbox) -> str:
    """A finished sweep of a dense and a pruned job, for ``outputs/sweeps/NAME``."""
    proc = prunelab_in_process("-m", "name=example", "pruning=none,one_shot", *D.FAST_OVERRIDES,
                               f"data_dir={sandbox.data}", "verbosity=quiet", cwd=sandbox.root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return SWEEP_DIR


# --------------------------------------------------------------------------- the markers


def test_every_command_block_is_marked() -> None:
    """A new command block must say whether and how it runs (docs/design/testing.md)."""
    problems = []
    for doc in DOCS:
        problems += [f"{s}: a doctest marker with no fenced block under it"
                     for s in doc.stray_markers]
        for b in doc.blocks:
            if b.marker_error:
                problems.append(f"{b.where}: {b.marker_error}")
            elif b.is_command and b.marker is None:
                problems.append(f"{b.where}: a command block without a marker: put "
                                "<!-- doctest: run|fast|skip REASON --> on the line before it "
                                "(docs/design/testing.md)")
            elif b.marker is not None and b.marker.mode != "skip":
                values = dict.fromkeys(("run", "ckpt", "sweep", "data"), "x")
                try:
                    D.script(b, values)
                except ValueError as err:
                    problems.append(f"{b.where}: {err}")
    assert not problems, "\n".join(problems)


def test_a_new_unmarked_block_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("Text.\n\n```bash\nprunelab report x\n```\n\n<!-- doctest: skip why -->\n"
                    "```\n$ python -m prunelab --help\n```\n\n```python\nprint(1)\n```\n"
                    "<!-- doctest: run -->\n\nText.\n")
    doc = D.parse(page, tmp_path)
    assert [(b.line, b.is_command, b.marker) for b in doc.blocks] == [
        (3, True, None), (8, True, D.Marker("skip", reason="why")), (12, False, None)]
    assert doc.stray_markers == ["page.md:15"]


def test_marker_parsing_and_command_rewriting() -> None:
    assert D.parse_marker("fast slow sweep:outputs/sweeps/a pruning.amount=0.3") == D.Marker(
        "fast", True, ("pruning.amount=0.3",), ("outputs/sweeps/a",))
    assert D.parse_marker("skip needs a GPU").reason == "needs a GPU"
    for bad in ("skip", "rn", "run key=value", "run quick"):
        with pytest.raises(ValueError):
            D.parse_marker(bad)
    text = ("python -m prunelab pruning=agp \\\n    pruning.amount=0.9   # a comment\n"
            "PYTHONPATH=$PWD prunelab --config-dir conf model=m '#x'\n"
            "prunelab report DIR -q\npython -m prunelab --help\n")
    lines = D.logical_lines(text)
    assert lines[0] == "python -m prunelab pruning=agp pruning.amount=0.9"
    assert [D.with_overrides(ln, ("trainer=fast",)).endswith("trainer=fast") for ln in lines] \
        == [True, True, False, False]
    assert "'#x' trainer=fast" in D.with_overrides(lines[1], ("trainer=fast",))
    with pytest.raises(ValueError, match="compound"):
        D.with_overrides("cd x && prunelab model=cnn", ("trainer=fast",))
    assert D.substitute("prunelab export <run dir> --data-dir /data; prunelab report DIR -q",
                        {"run": "outputs/runs/a b", "data": "/tmp/d"}) == \
        "prunelab export 'outputs/runs/a b' --data-dir /tmp/d; prunelab report 'outputs/runs/a b' -q"
    assert D.substitute("prunelab ... verbosity=quiet  # ~/my/data", {}) == \
        "prunelab  verbosity=quiet  # ~/my/data"
    assert D.subcommand(["report", "--help"]) == "help"
    assert D.subcommand(["-m", "seed=0,1"]) == "train"


def test_every_subcommand_runs_as_typed() -> None:
    """train and every tool run in a fresh process as documented; the fast suite keeps
    training, search (its composition outside the Hydra app), evaluate and report."""
    from prunelab.cli import COMMANDS

    every = set().union(*(D.subcommands(g[0]) for g in GROUPS))
    assert not {"train", *COMMANDS} - every - NEXT_COMMANDS_RUN
    fast = set().union(*(D.subcommands(g[0]) for g in GROUPS if not g[0].marker.slow))
    fast |= NEXT_COMMANDS_RUN - SLOW_NEXT
    assert {"train", "search", "evaluate", "report"} <= fast


# --------------------------------------------------------------------------- the blocks


def _run_block(block: D.Block, sandbox: Sandbox, values: dict[str, str]) -> None:
    timeout = 1800 if block.marker.slow else 300
    if block.console:
        for cmd, expected in D.console_steps(D.substitute(block.text, values)):
            proc = subprocess.run(["bash", "-c", cmd], cwd=sandbox.root, env=sandbox.env,
                                  capture_output=True, text=True, timeout=timeout)
            out = _norm(proc.stdout + proc.stderr)
            for line in expected:
                assert _norm(line) in out, (f"{block.where}: `{cmd}` did not print\n{line}\n"
                                            f"it printed:\n{proc.stdout}{proc.stderr}")
        return
    proc = subprocess.run(["bash", "-c", D.script(block, values)], cwd=sandbox.root,
                          env=sandbox.env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{block.where} failed (exit {proc.returncode}):\n"
                                  f"{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}")


@pytest.mark.parametrize("group", [
    pytest.param(g, id="+".join(b.where for b in g),
                 marks=[pytest.mark.slow] if g[0].marker.slow else [])
    for g in GROUPS])
def test_documented_commands_run_as_printed(group: list[D.Block], sandbox: Sandbox,
                                            request: pytest.FixtureRequest) -> None:
    block = group[0]
    needs = D.needs(block.text)
    values = {"data": str(sandbox.data)}
    if needs & {"run", "ckpt"}:
        values["run"] = request.getfixturevalue("doc_run")
        values["ckpt"] = f"{values['run']}/checkpoints/last.ckpt"
    if "sweep" in needs or block.marker.sweeps:
        values["sweep"] = request.getfixturevalue("doc_sweep")
        for dest in block.marker.sweeps:
            shutil.copytree(sandbox.root / values["sweep"], sandbox.root / dest,
                            dirs_exist_ok=True)
    _run_block(block, sandbox, values)


@pytest.mark.slow  # six processes; test_cli.py checks each help in-process
def test_every_tools_help_in_a_fresh_process(sandbox: Sandbox) -> None:
    from prunelab.cli import COMMANDS

    for name in COMMANDS:
        proc = subprocess.run(["prunelab", name, "--help"], cwd=sandbox.root, env=sandbox.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and f"prunelab {name}" in proc.stdout, proc.stderr[-2000:]


# --------------------------------------------------------------------------- next commands

NEXT_LABELS = ["evaluate", "report", "compact", "export", "resume / repeat"]
PRINTED = re.compile(r"^  ([a-z][a-z /]*):\s+(\S.*)$")


def printed_commands(stderr: str) -> dict[str, str]:
    """label -> command of the lines under a run summary's ``run directory:``."""
    lines = stderr.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("run directory:"))
    return {m.group(1): m.group(2) for ln in lines[start + 1:] if (m := PRINTED.match(ln))}


def run_as_printed(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``command`` as a shell would run it: leading ``KEY=value`` words set the environment."""
    words = shlex.split(command)
    env = dict(env)
    while words and D.ENV_ASSIGNMENT.match(words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def own_run(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory):
    """examples/own_model's run as docs/guide/own_model.md types it (``PYTHONPATH=$PWD prunelab
    --config-dir conf ...``), structured so that compact is among its next commands."""
    folder = sandbox.root / "examples" / "own_model"
    data = tmp_path_factory.mktemp("own_data")
    write_text_csv(data / "reviews" / "train.csv", fake_text_records(300))
    write_text_csv(data / "reviews" / "test.csv", fake_text_records(100, seed=1))
    env = {**sandbox.env, "PYTHONPATH": str(folder)}
    argv = ["prunelab", "--config-dir", "conf", "model=mymlp", "data=mycsv", "pruning=one_shot",
            "pruning/method=ln_structured", *D.FAST_OVERRIDES, f"data_dir={data}"]
    proc = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return folder, printed_commands(proc.stderr)


def test_next_commands_repeat_how_the_run_was_started(own_run) -> None:
    folder, cmds = own_run
    assert list(cmds) == NEXT_LABELS
    for label, cmd in cmds.items():
        # as typed; PRUNELAB_DATA is not the run's data folder (data_dir= was given)
        assert cmd.startswith(f"PYTHONPATH={folder} prunelab "), cmd
        if label in ("evaluate", "compact", "export"):
            assert cmd.endswith(" --allow-target mylab.nets"), cmd
    assert " --config-dir conf model=mymlp data=mycsv " in cmds["resume / repeat"]


@pytest.mark.parametrize("label", [
    pytest.param(label, marks=[pytest.mark.slow] if label in SLOW_NEXT else [])
    for label in NEXT_LABELS])
def test_printed_next_command_runs(own_run, sandbox: Sandbox, label: str) -> None:
    """Pasted as printed into a shell without PYTHONPATH, each command works."""
    folder, cmds = own_run
    env = {k: v for k, v in sandbox.env.items() if k != "PYTHONPATH"}
    proc = run_as_printed(cmds[label], folder, env)
    assert proc.returncode == 0, f"{cmds[label]}\n{proc.stderr[-4000:]}"


# --------------------------------------------------------------------------- fresh processes

COMPOSE_OUTSIDE_THE_APP = """
from hydra import compose
from prunelab import confsource
from prunelab.choices import check_command_line
from prunelab.paths import CONF_DIR
check_command_line(CONF_DIR, ["pruning=one_shot", "pruning/method=global_magnitude"])
with confsource.initialize():
    cfg = compose("config", overrides=["pruning=one_shot", "pruning/method=global_magnitude"])
from prunelab.components import component_name
print(component_name(cfg.pruning.schedule), component_name(cfg.pruning.method))
"""


def test_prunelab_composes_outside_its_app_in_a_fresh_process(tmp_path: Path) -> None:
    """What search and the name checks do, in a process where nothing registered the schema
    before (the tests' own process has, so only a fresh one shows it)."""
    proc = subprocess.run([sys.executable, "-c", COMPOSE_OUTSIDE_THE_APP], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["one_shot", "global_magnitude"]
