"""The README's runnable example works as printed."""

import subprocess
import sys

from conftest import ROOT


def test_own_module_example_runs_and_reaches_its_target():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "own_module.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 8: target 0.50 reached 0.5000" in proc.stdout
    assert "conv zeros: 0.5000" in proc.stdout
