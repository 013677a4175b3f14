"""Under 2-process CPU DDP (gloo), random and gradient-based criteria give the same masks on
both ranks: random draws come from the run seed, gradient statistics from averaged gradients."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.slow  # two processes with gloo: make test-all (the time budget of make test)
@pytest.mark.parametrize("method", ["random_unstructured",
                                    pytest.param("taylor", marks=pytest.mark.slow)])
def test_masks_identical_on_both_ranks(tmp_path, method):
    script = Path(__file__).parent / "ddp_masks.py"
    env = {**os.environ, "PL_TORCH_DISTRIBUTED_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), method], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m0 = torch.load(tmp_path / "rank0.pt")
    m1 = torch.load(tmp_path / "rank1.pt")
    assert m0.keys() == m1.keys() and m0
    for name in m0:
        assert torch.equal(m0[name], m1[name]), name
        assert 0.55 < float((m0[name] == 0).float().mean()) < 0.65
