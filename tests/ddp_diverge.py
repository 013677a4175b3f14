"""Run by tests/test_faults_status.py: 2-process CPU DDP where only rank 0 sees a NaN batch.

Both ranks must stop with DivergedError at the same check (one rank stopping alone would leave
the other waiting in the next all-reduce for ever). Lightning's DDP launcher re-executes this
script for rank 1, so it must be a plain script.
"""

import sys
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from prunelab.errors import DivergedError
from prunelab.models import ClassifierSystem


class Poison(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == 0 and batch_idx == 1:
            batch[0].fill_(float("nan"))


def main(out: str) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    model = ClassifierSystem(torch.nn.Linear(8, 3), optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=3,
                             check_every=3)
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Poison()])
    try:
        trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=16))
        result = "no error"
    except DivergedError as err:
        result = f"diverged epoch={err.epoch} step={err.step}"
    (Path(out) / f"rank{trainer.global_rank}.txt").write_text(result)


if __name__ == "__main__":
    main(sys.argv[1])
