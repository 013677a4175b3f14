"""A model of your own: a plain ``nn.Module`` from feature vectors to class logits.

prunelab's ``ClassifierSystem`` trains it (``conf/model/tiny_mlp.yaml``); the pruning callback
finds its Linear layers by itself and leaves the last one dense.
"""

from __future__ import annotations

from torch import Tensor, nn


class TinyMLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden // 2)
        self.out = nn.Linear(hidden // 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.fc2(self.fc1(x).relu()).relu())
