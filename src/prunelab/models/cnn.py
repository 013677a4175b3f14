"""The MNIST CNN of the reference article (a LeNet-style network, 431,080 parameters)."""

from torch import Tensor, nn
from torch.nn import functional as F


class LeNet(nn.Module):
    """conv 1→20 5x5, pool, conv 20→50 5x5, pool, fc 800→500, fc 500→10; returns logits.

    Logits rather than the article's log_softmax, so the loss is plain cross-entropy and the
    network exports cleanly. Each ReLU comes after its max-pool: the two commute (ReLU is
    monotone), so outputs and gradients equal the article's relu-then-pool order, while the
    ReLU touches a quarter of the elements (about a quarter of a training step on CPU).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2, 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2, 2))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)
