"""A bag-of-words classifier: any plain ``nn.Module`` from a batch of inputs to logits works."""

from __future__ import annotations

import torch
from torch import Tensor, nn

PAD_ID = 0  # prunelab's text data sets pad with 0 (<pad>) and map unknown words to 1 (<unk>)


class BagOfWordsMLP(nn.Module):
    """Mean of the word embeddings of each text (padding left out) → MLP → class logits."""

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 32,
                 hidden: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 2, embed_dim, padding_idx=PAD_ID)
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, ids: Tensor) -> Tensor:
        mask = (ids != PAD_ID).unsqueeze(-1).to(self.embedding.weight.dtype)
        mean = (self.embedding(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.fc2(torch.relu(self.fc1(mean)))
