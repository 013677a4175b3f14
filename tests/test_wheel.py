"""The built wheel, installed into a fresh venv, runs outside the repository with a user's
config dir (examples/own_model): the configs ship inside the package, and the user's groups
extend the built-in ones. Offline: the wheel is built without build isolation and installed
without dependencies, on top of the test interpreter's site-packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "own_model"


def _run(*args: str | Path, cwd: Path | None = None, env: dict | None = None,
         timeout: int = 300) -> subprocess.CompletedProcess:
    """A subprocess without this checkout on PYTHONPATH (unless ``env`` says otherwise)."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _build_wheel(tmp: Path) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the checkout (the tree stays untouched)."""
    src = tmp / "src-copy"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".prunelab_cache")
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    dist = tmp / "dist"
    proc = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "--no-index", "-q", "-w", dist, src)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = dist.glob("prunelab-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; the test interpreter's packages (torch, Lightning, ...)
    are visible after it through a .pth line, so nothing is downloaded."""
    venv = tmp / "venv"
    proc = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    proc = _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                "--no-index", "-q", wheel)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # only now: with the outer packages visible, pip would see prunelab as installed already
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(site.stdout.strip()) / "outer_site.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_runs_with_a_user_config_dir_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    venv = _fresh_venv(tmp_path, wheel)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PRUNELAB_DATA")}
    env.update(PYTHONPATH=str(EXAMPLE), MPLBACKEND="Agg", HOME=str(tmp_path / "home"))

    where = _run(venv / "bin" / "python", "-c",
                 "import prunelab, prunelab.confsource as c; print(prunelab.__file__); "
                 "print(c.config_path())", cwd=work, env=env)
    assert where.returncode == 0, where.stderr
    module, conf = where.stdout.split()
    assert Path(module).is_relative_to(venv) and conf == "pkg://prunelab.conf"

    data = tmp_path / "data"
    assert _run(sys.executable, EXAMPLE / "make_data.py", data).returncode == 0
    prunelab = venv / "bin" / "prunelab"
    user_conf = EXAMPLE / "conf"
    # a user's groups and the built-in ones are one group: a typo lists both kinds
    bad = _run(prunelab, "--config-dir", user_conf, "model=mymlpp", "data=mycsv", cwd=work,
               env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "did you mean mymlp?" in bad.stderr and "cnn" in bad.stderr and "text" in bad.stderr

    run_dir = work / "run"
    proc = _run(prunelab, "--config-dir", user_conf, "model=mymlp", "data=mycsv",
                "pruning=one_shot", "pruning.schedule.start_epoch=0", "trainer.max_epochs=1",
                f"data_dir={data}", "trainer.enable_progress_bar=false", "logger=csv",
                f"hydra.run.dir={run_dir}", cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert (results["model"], results["data"], results["status"]) == ("mymlp", "mycsv", "ok")
    assert results["sparsity_global"] == pytest.approx(0.5, abs=1e-3)
    assert results["test_acc"] > 0.9  # the example's data is easy; a broken pipeline is not
