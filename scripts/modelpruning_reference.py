"""Lightning's own ``ModelPruning`` on prunelab's MNIST study budget: the reference baseline for prunelab's own callback.

    .venv/bin/python scripts/modelpruning_reference.py [--seeds 0,1,2] [--final 0.98]
        [--initial 0.6] [--schedule agp|iterative] [--all-layers] [--rewind]
        [--threads N] [--out FILE]

The same model, data, optimiser, one-cycle LR and 8-epoch budget as
``python -m prunelab experiment=study_mnist`` (composed from ``conf/`` with ``pruning=none``),
with ``lightning.pytorch.callbacks.ModelPruning`` (global L1, ``use_global_unstructured``)
instead of prunelab's callback, raising sparsity over the ends of epochs 2-6 along the targets of
prunelab's own plan (``build_plan``: AGP cubic or linear from ``--initial`` to ``--final``).
``ModelPruning`` prunes a fraction of the *remaining* weights per call, so each call gets the
increment ``1 - (1 - t_k) / (1 - t_{k-1})`` that reaches the cumulative target ``t_k``.

``ModelPruning`` defaults to ``use_lottery_ticket_hypothesis=True``: after each pruning call it
resets the surviving weights to their values at the start of training. prunelab's callback keeps
training from the current weights, so the comparison on equal terms runs without rewinding (the
default here); ``--rewind`` turns ``ModelPruning``'s rewinding back on.

By default the pruned weights are prunelab's default targets (conv1, conv2, fc1; the
classifier stays dense), so sparsity means the same thing on both sides; ``--all-layers`` uses
``ModelPruning``'s default (every layer's weight, the classifier included). Prints one line per
seed and the mean; ``--out`` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelPruning

from prunelab.config import register
from prunelab.pruning.schedules import build_plan
from prunelab.run import instantiate_data, instantiate_model

ROOT = Path(__file__).resolve().parents[1]


def sparsity(net: torch.nn.Module, names: list[str]) -> float:
    zeros = total = 0
    for name in names:
        w = net.get_submodule(name).weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total


def one_seed(seed: int, args: argparse.Namespace) -> dict:
    # torch's pruning functions flatten weights with view(-1), which channels_last forbids
    overrides = ["experiment=study_mnist", "pruning=none", f"seed={seed}", "logger=none",
                 "model.channels_last=false"]
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    plan = build_plan(args.schedule, amount=args.final, initial=args.initial, n_steps=5,
                      start_epoch=2)
    targets = {step.epoch: step.target for step in plan}
    epochs = sorted(targets)

    def amount(epoch: int) -> float:
        if epoch not in targets:
            return 0.0
        i = epochs.index(epoch)
        previous = targets[epochs[i - 1]] if i else 0.0
        return 1.0 - (1.0 - targets[epoch]) / (1.0 - previous)

    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = instantiate_data(cfg)
    model = instantiate_model(cfg)
    names = ["conv1", "conv2", "fc1"]
    params = None if args.all_layers else [(model.net.get_submodule(n), "weight") for n in names]
    pruning = ModelPruning("l1_unstructured", amount=amount, use_global_unstructured=True,
                           parameters_to_prune=params,
                           use_lottery_ticket_hypothesis=args.rewind, verbose=0)
    trainer = L.Trainer(max_epochs=int(cfg.trainer.max_epochs), callbacks=[pruning],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - t0
    test = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    return {"seed": seed, "test_acc": float(test["test_acc"]),
            "sparsity_targets": sparsity(model.net, names), "targets": targets,
            "fit_seconds": fit_seconds, "use_lottery_ticket_hypothesis": args.rewind,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--final", type=float, default=0.98)
    parser.add_argument("--initial", type=float, default=0.6)
    parser.add_argument("--schedule", choices=("agp", "iterative"), default="agp")
    parser.add_argument("--all-layers", action="store_true",
                        help="ModelPruning's default targets (the classifier too)")
    parser.add_argument("--rewind", action="store_true",
                        help="ModelPruning's default use_lottery_ticket_hypothesis=True: reset the "
                             "surviving weights to their initial values after each pruning step")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own, all cores)")
    parser.add_argument("--data-dir", default=os.environ.get("PRUNELAB_DATA"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row = one_seed(seed, args)
        rows.append(row)
        print(f"seed {seed}: test_acc {row['test_acc']:.4f}  sparsity(conv1,conv2,fc1) "
              f"{row['sparsity_targets']:.4f}  fit {row['fit_seconds']:.0f} s", flush=True)
    accs = [r["test_acc"] for r in rows]
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    rewind = "rewinding" if args.rewind else "no rewinding"
    print(f"ModelPruning {args.schedule} {args.initial} -> {args.final} ({rewind}): mean test_acc "
          f"{statistics.mean(accs):.4f} ± {std:.4f} over {len(accs)} seed(s)")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
