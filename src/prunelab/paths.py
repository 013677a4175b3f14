"""The names of what a run folder holds, and the config keys that do not change a run's numbers.

Every module that reads or writes a run folder takes the names from here; ``conf/config.yaml``'s
``hydra.job.config.override_dirname.exclude_keys`` is the one derived copy, kept in step by a test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunelab import confsource

RESULTS = "results.json"  # a finished run's numbers, written atomically at the end
FAILED = "failed.json"  # instead of results.json when the run failed or diverged
SEARCH = "search.json"  # a bisection search's answers, in its sweep folder
OPTUNA_DB = "optuna.db"  # an Optuna study's storage (SQLite), in its sweep folder
OPTUNA_RESULTS = "optimization_results.yaml"  # the study's best trials, as Hydra's plugin writes
FINAL_MODEL = "final_model.pt"  # the plain network's state dict, masks folded in
COMPACT_MODEL = "compact_model.pt2"  # torch.export program of the compacted network
QUANTIZED_MODEL = "quantized_model.pt2"  # quantize=ptq|qat: torch.export program of the int8 model
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
HYDRA_DIR = ".hydra"  # Hydra's composed config and overrides
HYDRA_CONFIG = "config.yaml"  # in HYDRA_DIR: the run's composed config
HYDRA_OVERRIDES = "overrides.yaml"  # in HYDRA_DIR: the command-line overrides
HYDRA_SETTINGS = "hydra.yaml"  # in HYDRA_DIR: Hydra's own settings for the run
# prunelab export: <run>/EXPORT_DIR/<encoding>/{EXPORT_ARTIFACT, EXPORT_REPORT, EXPORT_ONNX}
EXPORT_DIR = "export"
EXPORT_ARTIFACT = "model.plx"  # the compressed, self-contained model
EXPORT_REPORT = "export.json"  # its size, ratio, encoding and measured accuracy
EXPORT_ONNX = "model.onnx"  # the decoded network for other runtimes; also formats onnx, onnx-int8
EXPORT_PTE = "model.pte"  # formats executorch, executorch-int8: the ExecuTorch program
# the checkout's conf/ folder, or pkg://prunelab.conf in an installed wheel (prunelab.confsource)
CONF_DIR = confsource.config_path()

# Dotted config keys whose value never changes a run's numbers: they stay out of run-folder
# names, resume checks, report series labels and search probe names, and may differ between
# the launches of one run. A key also covers its children (``logger`` covers ``logger.csv``).
NO_EFFECT_KEYS: tuple[str, ...] = (
    "data_dir",
    "ckpt_path",
    "name",
    "threads",
    "progress_refresh_rate",
    "logger",
    "verbosity",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "data.data_dir",
    "data.cache_dir",
    "objectives",
)
# launcher settings decide where and how jobs run, never what they compute
LAUNCHER_KEYS: tuple[str, ...] = ("hydra/launcher", "hydra.launcher")


def run_config(run_dir: str | Path) -> Path:
    """``<run dir>/.hydra/config.yaml``: the composed config a run folder is recognised by."""
    return Path(run_dir) / HYDRA_DIR / HYDRA_CONFIG


def last_checkpoint(run_dir: str | Path) -> Path:
    """``<run dir>/checkpoints/last.ckpt``."""
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def override_key(override: str) -> str:
    """The key of a command-line override: ``+trainer.x=1`` → ``trainer.x``."""
    return override.split("=", 1)[0].lstrip("+~")


def has_no_effect(key: str) -> bool:
    """Whether an override or config key (dotted, or a ``group/option`` path) changes nothing."""
    return any(key == k or key.startswith(k + ".") or key.startswith(k + "/")
               for k in (*NO_EFFECT_KEYS, *LAUNCHER_KEYS))


def without_no_effect_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a (plain, nested) config without the keys that do not change results."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    for key in NO_EFFECT_KEYS:
        *parents, leaf = key.split(".")
        node: Any = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out
