"""``python -m prunelab.evaluate <run dir | .ckpt>``: re-test a finished or interrupted run.

The pruned weights are loaded into the *plain* network class named by the run's config (masks
folded into the weights), so what is measured is exactly what a user who takes the model away
gets: no Lightning, no pruning hooks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from prunelab.errors import CheckpointError, PrunelabError
from prunelab.pruning.metrics import summarize


def fold_state_dict_masks(state_dict: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """``x_orig`` and ``x_mask`` → ``x = x_orig * x_mask``; keys under ``prefix`` lose it."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if prefix and not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if key.endswith("_mask"):
            continue
        if key.endswith("_orig"):
            base = key[: -len("_orig")]
            value = value * state_dict[prefix + base + "_mask"]
            key = base
        out[key] = value
    return out


def _find_run_dir(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if (candidate / ".hydra" / "config.yaml").exists():
            return candidate
    raise PrunelabError(f"{path} is not inside a prunelab run directory (no .hydra/config.yaml found)")


def load_plain_model(path: str | Path) -> tuple[nn.Module, DictConfig]:
    """The run's network class with its pruned weights; from ``final_model.pt`` or a ``.ckpt``."""
    path = Path(path)
    if not path.exists():
        raise PrunelabError(f"{path} does not exist: give a run directory or a .ckpt file")
    run_dir = _find_run_dir(path)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    net = instantiate(cfg.model.net)
    if path.is_dir():
        final = run_dir / "final_model.pt"
        last = run_dir / "checkpoints" / "last.ckpt"
        path = final if final.exists() else last
        if not path.exists():
            raise PrunelabError(f"{run_dir} has neither final_model.pt nor checkpoints/last.ckpt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=path.suffix == ".pt")
    except Exception as err:
        raise CheckpointError(f"{path} is corrupt or unreadable ({type(err).__name__})") from None
    if isinstance(payload, dict) and "state_dict" in payload:
        state = fold_state_dict_masks(payload["state_dict"], prefix="net.")
    else:
        state = fold_state_dict_masks(payload)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path} does not fit {type(net).__name__}: {str(err).splitlines()[0]}"
        ) from None
    return net.eval(), cfg


@torch.no_grad()
def evaluate(net: nn.Module, loader: Any, binary: bool) -> dict[str, float]:
    correct = total = 0
    for x, y in loader:
        logits = net(x)
        pred = (logits > 0).long() if binary else logits.argmax(-1)
        correct += int((pred == y.long()).sum())
        total += y.shape[0]
    return {"test_acc": correct / max(total, 1), "test_samples": total}


def main(argv: list[str] | None = None) -> int:
    from prunelab.cli_help import make_parser
    from prunelab.logs import add_verbosity_args, get_logger, setup

    parser = make_parser("python -m prunelab.evaluate", __doc__, [
        ("python -m prunelab.evaluate outputs/runs/<run>",
         "test the run's final model (final_model.pt) again; prints JSON on stdout"),
        ("python -m prunelab.evaluate outputs/runs/<run>/checkpoints/last.ckpt",
         "test an interrupted run's last checkpoint"),
        ("python -m prunelab.evaluate outputs/runs/<run> --data-dir /data",
         "with the data sets somewhere else than when the run was made"),
    ])
    parser.add_argument("path", help="a run directory, or a checkpoint inside one")
    parser.add_argument("--data-dir", help="where the data sets are (default: the run's data_dir)")
    add_verbosity_args(parser)
    args = parser.parse_args(argv)
    setup(args.verbosity)
    log = get_logger(__name__)
    try:
        log.info("loading %s", args.path)
        net, cfg = load_plain_model(args.path)
        if args.data_dir:
            cfg.data_dir = args.data_dir
        data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
        data_cfg.pop("name", None)
        data_cfg.pop("description", None)
        datamodule = instantiate(data_cfg)
        datamodule.prepare_data()
        datamodule.setup("test")
        log.info("testing on %s", cfg.data.get("name", "the test set"))
        result = {**evaluate(net, datamodule.test_dataloader(), cfg.model.task == "binary"),
                  **summarize(net, None)}
    except PrunelabError as err:
        print(f"prunelab.evaluate: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
