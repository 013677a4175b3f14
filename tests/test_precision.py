"""Mixed precision with pruning: bf16 on CPU keeps pruned weights exactly zero and resumes
exactly; 16-mixed on CUDA (skipped without a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from prunelab.run import run

PRUNED = ["pruning=iterative", "pruning.schedule.initial=0.3", "pruning.schedule.amount=0.6",
          "pruning.schedule.step_size=null", "pruning.schedule.n_steps=2", "trainer=fast", "trainer.max_epochs=3"]


class MasksHold(L.Callback):
    """After every optimizer step: each pruned weight's masked entries are exactly zero."""

    def __init__(self) -> None:
        self.checked = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for module in pl_module.modules():
            mask = getattr(module, "weight_mask", None)
            if mask is not None:
                assert module.weight_orig.dtype == torch.float32  # masters stay fp32
                assert torch.count_nonzero(module.weight_orig[mask == 0]) == 0
                self.checked += 1


class StopAfter(L.Callback):
    """Dies at the start of ``epoch``, after the previous epoch's checkpoint is written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("killed (simulated)")


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "final_model.pt", weights_only=True)


def test_bf16_on_cpu_keeps_masks_and_resumes_exactly(make_cfg, tmp_path):
    cfg = make_cfg(*PRUNED, "trainer.precision=bf16-mixed", "trainer.accelerator=cpu")
    spy = MasksHold()
    whole = run(cfg, tmp_path / "whole", callbacks=[spy])
    assert whole["status"] == "ok" and spy.checked > 0
    assert whole["sparsity_global"] == pytest.approx(0.6, abs=1e-4)
    for name, weight in _final(tmp_path / "whole").items():
        if name in ("conv1.weight", "conv2.weight", "fc1.weight"):
            assert (weight == 0).float().mean().item() == pytest.approx(0.6, abs=2e-3), name

    with pytest.raises(RuntimeError, match="killed"):
        run(cfg, tmp_path / "resumed", callbacks=[StopAfter(2)])
    assert not (tmp_path / "resumed" / "results.json").exists()
    resumed = run(cfg, tmp_path / "resumed")
    a, b = _final(tmp_path / "whole"), _final(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_acc"] == whole["test_acc"]
    assert json.loads((tmp_path / "resumed" / "results.json").read_text())["epochs"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_mixed_on_cuda_keeps_masks(make_cfg, tmp_path):
    cfg = make_cfg(*PRUNED, "trainer.precision=16-mixed", "trainer.accelerator=gpu",
                   "model.channels_last=false")
    spy = MasksHold()
    result = run(cfg, tmp_path / "run", callbacks=[spy])
    assert result["status"] == "ok" and spy.checked > 0
    assert result["sparsity_global"] == pytest.approx(0.6, abs=1e-4)
