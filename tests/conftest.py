"""Shared fixtures: the real configs, composed and shrunk; tiny data in the real formats."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("MPLBACKEND", "Agg")

from prunelab import confsource  # noqa: E402

from fakedata import write_fake_imdb, write_fake_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_DATA = Path(os.environ.get("PRUNELAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


# Settings that make the real configs run in seconds on tiny data.
TINY = [
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "data.val_size=40",
    "data.eval_batch_size=64",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with tiny MNIST (.gz IDX) and IMDB (aclImdb folders) files."""
    root = tmp_path_factory.mktemp("data")
    write_fake_mnist(root, n_train=240, n_test=80)
    write_fake_imdb(root, n_per_class=60, as_tar=False)
    return root


@pytest.fixture
def make_cfg(tiny_data: Path) -> Callable[..., DictConfig]:
    """Compose the real config with ``overrides`` on top of the tiny-data settings, the way
    prunelab composes outside its Hydra app (:func:`prunelab.confsource.initialize`, which
    registers the schema: no test registers it for the others)."""

    def _make(*overrides: str, tiny: bool = True) -> DictConfig:
        extra = [*TINY, f"data_dir={tiny_data}"] if tiny else []
        with confsource.initialize():
            return compose("config", overrides=[*extra, *overrides])

    return _make


def shared_data_or_skip() -> Path:
    if not (SHARED_DATA / "MNIST").exists():
        pytest.skip(f"full data sets not found at {SHARED_DATA} (set PRUNELAB_SHARED_DATA)")
    return SHARED_DATA


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """The random order's seed, also under -q (pytest-randomly prints it only in the header),
    so that an order that fails can be repeated."""
    if config.pluginmanager.hasplugin("randomly"):
        seed = config.getoption("randomly_seed", None)
        terminalreporter.write_line(f"random test order: repeat it with -p randomly "
                                    f"--randomly-seed={seed} (make test SEED={seed})")
