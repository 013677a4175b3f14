"""prunelab: neural-network pruning experiments on PyTorch Lightning and Hydra."""

__version__ = "0.1.0"

import warnings

# conf/hydra/launcher/joblib.yaml completes the joblib plugin's own config; Hydra 1.3 warns
# about that merge in every worker, although the file is complete by itself.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/joblib' is validated against ConfigStore")
