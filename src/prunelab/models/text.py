"""The IMDB classifier of the reference article, with its token averaging done right."""

import torch
from torch import Tensor, nn

PAD_ID = 0
NUM_SPECIALS = 2  # <pad>=0, <unk>=1


class TextClassifier(nn.Module):
    """Embedding → mean over each review's real tokens → fc → ReLU → fc → one logit.

    The article averages with ``mean(dim=0)`` on batch-first input, i.e. over the batch, so every
    review in a batch gets the same features; here padding is masked out and the mean is taken
    over the tokens of each review.
    """

    def __init__(self, vocab_size: int = 10_000, embed_dim: int = 100, hidden: int = 200) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + NUM_SPECIALS, embed_dim, padding_idx=PAD_ID)
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, ids: Tensor) -> Tensor:
        mask = (ids != PAD_ID).unsqueeze(-1).to(self.embedding.weight.dtype)
        summed = (self.embedding(ids) * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp_min(1.0)
        return self.fc2(torch.relu(self.fc1(mean))).squeeze(-1)
