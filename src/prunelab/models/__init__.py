"""Networks (plain ``nn.Module``) and the LightningModule that trains them."""

from typing import Any

from torch import nn

from prunelab.models.cnn import LeNet
from prunelab.models.text import TextClassifier
from prunelab.models.vision import torchvision_net

__all__ = ["NETWORK_ATTR", "ClassifierSystem", "LeNet", "TextClassifier", "network_of",
           "torchvision_net"]

#: The attribute under which a LightningModule holds the plain network it trains. Stated here
#: only: ``final_model.pt`` holds that network's state dict, a Lightning checkpoint holds it
#: under ``net.``, and compaction, export and ``prunelab evaluate`` rebuild it from the run
#: config's ``model.net`` node.
NETWORK_ATTR = "net"


def network_of(module: nn.Module) -> nn.Module:
    """The plain network ``module`` trains: its ``net`` attribute when that is an ``nn.Module``
    (:class:`ClassifierSystem`; name yours so to get the plain network saved and compacted),
    else ``module`` itself (a LightningModule that is its own network).
    """
    net = getattr(module, NETWORK_ATTR, None)
    return net if isinstance(net, nn.Module) else module


def __getattr__(name: str) -> Any:
    if name == "ClassifierSystem":
        # lazy: the training system imports Lightning; the plain networks (and loading an
        # exported artifact) must not need it
        from prunelab.models.system import ClassifierSystem

        return ClassifierSystem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
