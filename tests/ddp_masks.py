"""Run by tests/test_ddp.py: 2-process CPU DDP fit with pruning; each rank saves its masks.

``python ddp_masks.py OUT METHOD [ACCELERATOR DEVICES]``: benchmarks/gpu_check.sh runs it on
every GPU present (``gpu N``).

Lightning's DDP launcher re-executes this script for rank 1, so it must be a plain script.
"""

import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))
from prunelab.pruning import PruningCallback, criteria  # noqa: E402

from test_callback import TinyNet, loader  # noqa: E402


def main(out: str, method: str, accelerator: str = "cpu", devices: int = 2) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    model = TinyNet()
    knobs = {"grad_batches": 2} if method in ("taylor", "fisher") else {}
    cb = PruningCallback([(0, 0.3), (1, 0.6)], method=criteria.method(method, **knobs), seed=0,
                         make_permanent=False)
    trainer = L.Trainer(max_epochs=2, accelerator=accelerator, devices=devices, strategy="ddp",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cb])
    trainer.fit(model, loader(n=128, seed=trainer.global_rank))  # different data per rank
    masks = {t.name: getattr(t.module, t.parameter + "_mask").clone() for t in cb.targets}
    torch.save(masks, Path(out) / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:3], *sys.argv[3:4], *(int(n) for n in sys.argv[4:5]))
