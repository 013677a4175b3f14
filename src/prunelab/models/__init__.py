"""Networks (plain ``nn.Module``) and the LightningModule that trains them."""

from prunelab.models.cnn import LeNet
from prunelab.models.system import ClassifierSystem
from prunelab.models.text import TextClassifier

__all__ = ["ClassifierSystem", "LeNet", "TextClassifier"]
