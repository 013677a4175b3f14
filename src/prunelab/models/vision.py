"""torchvision's classification architectures by name, as plain networks for any image size.

``torchvision_net("resnet18", num_classes=10, in_channels=1)`` is ``torchvision.models.
get_model`` with randomly initialised weights (``weights`` names a torchvision weight set, which
torch loads from its hub cache or downloads), its first convolution rebuilt for ``in_channels``
when that is not 3. The result is an ordinary ``nn.Module``: prunelab prunes, compacts and
exports it like its own networks.
"""

from __future__ import annotations

import difflib

from torch import nn

from prunelab import bounds
from prunelab.errors import ConfigError


def classification_archs() -> list[str]:
    """torchvision's image classification architectures (``torchvision.models.list_models``)."""
    from torchvision import models

    return list(models.list_models(module=models))


def torchvision_net(arch: str, num_classes: int = 10, in_channels: int = 3,
                    weights: str | None = None) -> nn.Module:
    """A torchvision classifier by name, ``num_classes`` outputs, ``in_channels`` input planes."""
    from torchvision import models

    archs = classification_archs()
    if arch not in archs:
        close = difflib.get_close_matches(arch, archs, 5, 0.5) or archs[:10]
        raise ConfigError(f"model.arch={arch!r} is not a torchvision classification model; "
                          f"closest: {', '.join(close)}")
    num_classes = bounds.integer("model.num_classes", num_classes, 1, bounds.MAX_CLASSES)
    in_channels = bounds.integer("model.net.in_channels", in_channels, 1, bounds.MAX_WIDTH)
    net = models.get_model(arch, weights=weights, num_classes=int(num_classes))
    if int(in_channels) != 3:
        _set_in_channels(net, int(in_channels))
    return net


def _set_in_channels(net: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d by one taking ``in_channels`` planes (same shape otherwise)."""
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups if child.groups == 1 else 1,
                    bias=child.bias is not None, padding_mode=child.padding_mode))
                return
    raise ConfigError("model.net.in_channels: this architecture has no Conv2d to adapt")
