"""Loading files that may come from someone else: checkpoints, weights and run folders.

Trust model: every file a user points to, or that sits in a run folder, is untrusted.
Checkpoints and weights load with ``torch.load(weights_only=True)`` (tensors and plain
containers only; a pickle that would call anything is refused before it runs), and a run
folder's saved ``.hydra/config.yaml`` may only name ``_target_``s from an allow-list before
anything in it is built. A saved config of an earlier release is read in today's shape
(:func:`read_run_config`, :mod:`prunelab.legacy`).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from prunelab.allowlist import ALLOW_ENV, allow_prefix, allowed_prefixes, how_to_allow  # noqa: F401 (ALLOW_ENV: re-exported)
from prunelab.config import register
from prunelab.errors import CheckpointError, ConfigError, PrunelabError, UnsafeInputError
from prunelab.legacy import upgrade
from prunelab.models import NETWORK_ATTR
from prunelab.pairing import arguments
from prunelab.paths import FINAL_MODEL, last_checkpoint, run_config

# classes a prunelab run folder names: prunelab's networks, systems and data modules, torch's
# optimizers and LR schedulers. Only classes defined there: a function under these (one that
# writes files, say) or a class imported into them (pathlib.Path) is not a constructor a run needs.
_BUILTIN_PREFIXES = ("prunelab.models.", "prunelab.data.", "torch.optim.")
# the functions a built-in config names as a _target_ (model=torchvision's network)
_BUILTIN_FACTORIES = ("prunelab.models.torchvision_net", "prunelab.models.vision.torchvision_net")


def load_checkpoint(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with one line for a file that is unsafe or unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "weights_only" in text.lower() or "global" in text.lower():
            what = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "global" in ln),
                        text.splitlines()[0] if text else "")
            raise UnsafeInputError(
                f"refusing to load {path}: its pickle would build or call something other than "
                f"tensors and plain data ({what[:160]}); prunelab loads checkpoints with "
                "weights_only=True, so nothing in it was run; only use files from a trusted source"
            ) from None
        raise _corrupt(path, err) from None
    except Exception as err:  # truncated zip, not a torch file ...
        raise _corrupt(path, err) from None


def _corrupt(path: Path, err: Exception) -> CheckpointError:
    first = str(err).splitlines()[0][:120] if str(err) else ""
    return CheckpointError(
        f"checkpoint {path} is corrupt or not a prunelab checkpoint ({type(err).__name__}: {first}); "
        "move it away to start fresh, or pass ckpt_path=null"
    )


def _targets(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every ``_target_`` in a (plain, unresolved) config tree, with its dotted key."""
    if isinstance(node, dict):
        for k, child in node.items():
            sub = f"{key}.{k}" if key else str(k)
            if k == "_target_":
                yield sub, str(child)
            else:
                yield from _targets(child, sub)
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _targets(child, f"{key}[{i}]")


def _is_builtin_class(target: str) -> bool:
    if not target.startswith(_BUILTIN_PREFIXES):
        return False
    from hydra.utils import get_object

    try:
        cls = get_object(target)  # imports only modules under the prefixes above
    except Exception:
        return False
    if not isinstance(cls, type) and target not in _BUILTIN_FACTORIES:
        return False  # no arbitrary function of those modules (a file writer, ...)
    # defined there, not a class another library's module imported into one of them
    return str(getattr(cls, "__module__", "")).startswith(("prunelab.models", "prunelab.data", "torch.optim"))


#: the sections of a saved config that the commands reading a run folder build
BUILT_SECTIONS = ("model", "data")


def check_targets(cfg: DictConfig, source: Path, allow: Iterable[str] = ()) -> None:
    """Refuse a config that names a ``_target_`` outside the allow-list, before anything is built.

    The sections that are built (:data:`BUILT_SECTIONS`) are checked; allowed there: prunelab's
    model and data classes, ``torch.optim`` classes, and targets that start with one of
    ``allow`` / $PRUNELAB_ALLOW_TARGETS (a user's own module, e.g. ``mypkg.models.``).
    """
    extra = allowed_prefixes(allow)
    plain = OmegaConf.to_container(cfg, resolve=False)
    built = {k: plain[k] for k in BUILT_SECTIONS if isinstance(plain, dict) and k in plain}
    for key, target in _targets(built):
        if extra and target.startswith(extra):
            continue
        if not _is_builtin_class(target):
            raise UnsafeInputError(
                f"{source}: {key}={target!r} is not on the allow-list (prunelab's model and data "
                "classes, torch.optim optimizers and schedulers), so it was not run; if you trust "
                f"this run folder, allow it with {how_to_allow(target)}"
            )


def read_run_config(path: Path) -> DictConfig:
    """A run folder's saved ``.hydra/config.yaml``, in today's shape (one written by an earlier
    release is converted, :func:`prunelab.legacy.upgrade`); one line if it is unreadable."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:
        raise ConfigError(f"{path} is unreadable ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path} holds no config mapping: not a prunelab run config")
    try:
        new, _ = upgrade(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]
    except PrunelabError as err:
        raise ConfigError(f"{path}: {err}") from None
    return OmegaConf.create(new)


def foreign_targets(cfg: DictConfig) -> list[str]:
    """The ``--allow-target`` prefixes a run's config needs: one per module of its
    ``_target_``s outside the built-in allow-list (a model of your own) in the sections that
    are built (:data:`BUILT_SECTIONS`), in order, once each."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    built = {k: plain[k] for k in BUILT_SECTIONS if isinstance(plain, dict) and k in plain}
    prefixes = [allow_prefix(t) for _, t in _targets(built) if not _is_builtin_class(t)]
    return list(dict.fromkeys(prefixes))


def run_datamodule(cfg: DictConfig, data_dir: str | None = None) -> Any:
    """The data module of a run's (already checked) config, not yet prepared; ``data_dir``
    overrides the run's."""
    from hydra.utils import instantiate

    if data_dir:
        cfg.data_dir = data_dir

    data_cfg = arguments(OmegaConf.to_container(cfg.data, resolve=True))
    if "_target_" not in data_cfg:
        raise ConfigError(f"the run's config has no data._target_ (data: {cfg.data.get('name')!r}): "
                          "not a data module prunelab can build")
    try:
        return instantiate(data_cfg)
    except Exception as err:
        if isinstance(err, PrunelabError):
            raise
        raise ConfigError(f"cannot build the run's data module {data_cfg['_target_']}: "
                          f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def run_test_loader(cfg: DictConfig, data_dir: str | None = None) -> Any:
    """The test loader of a run's (already checked) config; ``data_dir`` overrides the run's."""
    datamodule = run_datamodule(cfg, data_dir)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule.test_dataloader()


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


def find_run_dir(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if run_config(candidate).exists():
            return candidate
    raise PrunelabError(f"{path} is not inside a prunelab run directory (no .hydra/config.yaml found)")


def weights_file(path: Path, run_dir: Path) -> Path:
    """A file given as is; for a run folder ``final_model.pt`` if present, else ``checkpoints/last.ckpt``."""
    if not path.is_dir():
        return path
    for candidate in (run_dir / FINAL_MODEL, last_checkpoint(run_dir)):
        if candidate.exists():
            return candidate
    raise PrunelabError(f"{run_dir} has neither final_model.pt nor checkpoints/last.ckpt")


def load_finished_run(path: str | Path, allow: Iterable[str] = ()) -> tuple[nn.Module, DictConfig, Path]:
    """The run's plain network with its pruned weights, the run's config, and the weights file.

    ``path`` is a run folder (``final_model.pt``, else ``checkpoints/last.ckpt``) or a ``.pt`` /
    ``.ckpt`` file inside one. The folder's config is checked against the ``_target_``
    allow-list (:func:`check_targets`) and the weights load with ``weights_only=True``.
    """
    from hydra.utils import instantiate

    path = Path(path)
    if not path.exists():
        raise PrunelabError(f"{path} does not exist: give a run directory or a .ckpt file")
    run_dir = find_run_dir(path)
    cfg_path = run_config(run_dir)
    register()
    cfg = read_run_config(cfg_path)
    if "model" not in cfg or not isinstance(cfg.model, DictConfig) or "net" not in cfg.model:
        raise ConfigError(f"{cfg_path} has no model.net node: not a prunelab run config")
    check_targets(cfg, cfg_path, allow)
    weights = weights_file(path, run_dir)
    payload = load_checkpoint(weights)
    try:
        net = instantiate(cfg.model.net)
    except Exception as err:
        raise ConfigError(f"cannot build model.net from {cfg_path}: {str(err).splitlines()[0]}") from None
    if isinstance(payload, dict) and "state_dict" in payload:
        state = fold_state_dict_masks(payload["state_dict"], prefix=f"{NETWORK_ATTR}.")
    elif isinstance(payload, dict):
        state = fold_state_dict_masks(payload)
    else:
        raise CheckpointError(f"{weights} holds no state dict ({type(payload).__name__})")
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{weights} does not fit {type(net).__name__}: {str(err).splitlines()[0]}"
        ) from None
    return net.eval(), cfg, weights
