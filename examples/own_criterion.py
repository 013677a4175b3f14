"""Your own pruning criterion, registered from outside prunelab and used by name.

A criterion is a score function (higher = kept longer) registered once. This one is the
"reverse magnitude" control: it removes the *largest* weights first, the sanity check that
shows how much magnitude pruning owes to picking small weights.

From Python:   PruningCallback(plan, method="reverse_magnitude")
From the CLI:  PYTHONPATH=examples python -m prunelab imports=[own_criterion] pruning=one_shot \\
                   pruning.method._target_=prunelab.pruning.criteria.ByName \\
                   pruning.method.criterion=reverse_magnitude
"""

import torch

from prunelab.pruning.criteria import ScoreContext, register


@register(name="reverse_magnitude", scopes=("layer", "global"))
def reverse_magnitude(weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
    """-|w|: the largest weights score lowest and go first."""
    return -weight.detach().abs()
