"""int8 models of a trained network: the run's ``quantize`` stage (``quantize=none|ptq|qat``).

:func:`quantize_int8` (post-training static int8) and :func:`qat_finetune` (quantisation-aware
fine-tuning) build on torchao's PT2E flow with ExecuTorch's XNNPACK quantizer, the optional
``executorch`` extra (``pip install 'prunelab[executorch]'``); nothing of it is imported until
a quantisation runs.
"""

from prunelab.quantize.pt2e import int8_weights, load_program, quantize_int8, save_program
from prunelab.quantize.qat import qat_finetune
from prunelab.quantize.stage import PTQ, QAT, NoQuantization, quantize_run

__all__ = ["PTQ", "QAT", "NoQuantization", "int8_weights", "load_program", "qat_finetune",
           "quantize_int8", "quantize_run", "save_program"]
