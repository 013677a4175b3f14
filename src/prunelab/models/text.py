"""The IMDB classifier of the reference article, with its token averaging done right."""

import torch
from torch import Tensor, nn

from prunelab import bounds
from prunelab.errors import ConfigError

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
        bounds.integer("model.net.vocab_size", vocab_size, 1, bounds.MAX_VOCAB)
        bounds.integer("model.net.embed_dim", embed_dim, 1, bounds.MAX_WIDTH)
        bounds.integer("model.net.hidden", hidden, 1, bounds.MAX_WIDTH)
        params = (vocab_size + NUM_SPECIALS) * embed_dim + (embed_dim + 2) * hidden
        if params > bounds.MAX_PARAMS:  # refused before torch allocates it
            raise ConfigError(f"model.net.vocab_size={vocab_size} x embed_dim={embed_dim} (+ "
                              f"hidden={hidden}) makes {params:.3g} parameters, more than "
                              f"{bounds.MAX_PARAMS:.3g}: make them smaller")
        vocab_size, embed_dim, hidden = int(vocab_size), int(embed_dim), int(hidden)
        self.embedding = nn.Embedding(vocab_size + NUM_SPECIALS, embed_dim, padding_idx=PAD_ID)
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, ids: Tensor) -> Tensor:
        mask = (ids != PAD_ID).unsqueeze(-1).to(self.embedding.weight.dtype)
        summed = (self.embedding(ids) * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp_min(1.0)
        return self.fc2(torch.relu(self.fc1(mean))).squeeze(-1)
