"""Networks (plain ``nn.Module``) and the LightningModule that trains them."""

from typing import Any

from prunelab.models.cnn import LeNet
from prunelab.models.text import TextClassifier
from prunelab.models.vision import torchvision_net

__all__ = ["ClassifierSystem", "LeNet", "TextClassifier", "torchvision_net"]


def __getattr__(name: str) -> Any:
    # the training system imports Lightning; the plain networks (and loading an exported
    # artifact) must not need it
    if name == "ClassifierSystem":
        from prunelab.models.system import ClassifierSystem

        return ClassifierSystem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
