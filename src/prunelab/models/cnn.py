"""The MNIST CNN of the reference article (a LeNet-style network, 431,080 parameters)."""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from prunelab import bounds


class LeNet(nn.Module):
    """conv 1→20 5x5, pool, conv 20→50 5x5, pool, fc 800→500, fc 500→10; returns logits.

    Logits rather than the article's log_softmax, so the loss is plain cross-entropy and the
    network exports cleanly. Each ReLU comes after its max-pool: the two commute (ReLU is
    monotone), so outputs and gradients equal the article's relu-then-pool order, while the
    ReLU touches a quarter of the elements (about a quarter of a training step on CPU).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        in_channels = bounds.integer("model.net.in_channels", in_channels, 1, bounds.MAX_WIDTH)
        num_classes = bounds.integer("model.net.num_classes", num_classes, 1, bounds.MAX_CLASSES)
        self.conv1 = nn.Conv2d(in_channels, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(max_pool2x2(self.conv1(x)))
        x = F.relu(max_pool2x2(self.conv2(x)))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def max_pool2x2(x: Tensor) -> Tensor:
    """``F.max_pool2d(x, 2, 2)``, without its indices when no gradient is needed.

    On CPU, torch's channels_last max-pool writes an index per output and vectorises over
    channels only, so it barely speeds up when a layer loses channels and dominates a compacted
    LeNet's inference. Two elementwise maxima over the NHWC memory (rows, then column pairs)
    give the same values (NaN included) in a fraction of the time (docs/results/README.md).
    Training keeps torch's op: its backward is the faster one.
    """
    n, c, h, w = x.shape if x.dim() == 4 else (0, 0, 1, 1)
    if (x.dim() != 4 or h % 2 or w % 2 or (torch.is_grad_enabled() and x.requires_grad)
            or not x.is_contiguous(memory_format=torch.channels_last)):
        return F.max_pool2d(x, 2, 2)
    y = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2 * c)  # a view: NHWC memory
    y = torch.maximum(y[:, :, 0], y[:, :, 1])  # rows 2i and 2i+1: (n, h/2, w/2, 2c)
    y = torch.maximum(y[..., :c], y[..., c:])  # columns 2j and 2j+1: (n, h/2, w/2, c)
    return y.permute(0, 3, 1, 2)  # NCHW view of channels_last memory
