"""torchvision architectures by name: built, pruned structurally and compacted like prunelab's own."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunelab.errors import ConfigError
from prunelab.models import torchvision_net
from prunelab.pruning.compaction import compact
from prunelab.pruning.criteria import mask as criterion_mask


def _randomise_batchnorm(net: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters away from their identity defaults, so a folded
    constant (a zeroed filter's BN output) is not zero by accident."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_resnet_structured_pruning_and_compaction_keep_outputs():
    torch.manual_seed(0)
    net = torchvision_net("resnet18", num_classes=10)
    _randomise_batchnorm(net)
    convs = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)
             and name.endswith("conv1") and name.startswith("layer")]
    assert len(convs) == 8
    for name in convs:  # half the filters of each block's first conv, by L2 norm
        module = net.get_submodule(name)
        prune.custom_from_mask(module, "weight",
                               criterion_mask("ln_structured", module.weight, 0.5))
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    # a zeroed filter whose BN output is a positive constant feeds a zero-padded conv: that
    # constant cannot fold into a bias exactly, so such filters stay (and the call says so)
    with pytest.warns(UserWarning, match="kept zeroed units it could not remove exactly"):
        small = compact(net, x)  # Torch-Pruning traces with autograd on
    with torch.no_grad():
        after = small(x)
    assert (after - before).abs().max().item() < 1e-5
    n_before = sum(p.numel() for p in net.parameters())
    n_after = sum(p.numel() for p in small.parameters())
    assert n_after < 0.9 * n_before
    for block in (small.layer1[0], small.layer2[1], small.layer3[0], small.layer4[1]):
        width = block.conv2.out_channels  # the residual width is untouched
        assert width // 2 <= block.conv1.out_channels < width
        assert block.conv2.in_channels == block.conv1.out_channels


def test_grayscale_input_and_unknown_arch():
    net = torchvision_net("resnet18", num_classes=3, in_channels=1)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(ConfigError, match="'resnet19' is not a torchvision classification model; "
                                          "closest: resnet18"):
        torchvision_net("resnet19")


def test_run_folders_of_torchvision_models_pass_the_target_allow_list(tmp_path):
    from omegaconf import OmegaConf

    from prunelab.errors import UnsafeInputError
    from prunelab.loading import check_targets

    ok = OmegaConf.create({"model": {"net": {"_target_": "prunelab.models.torchvision_net"}}})
    check_targets(ok, tmp_path / "config.yaml")
    other = OmegaConf.create({"model": {"net": {"_target_": "prunelab.io.atomic_save"}}})
    with pytest.raises(UnsafeInputError, match="not on the allow-list"):
        check_targets(other, tmp_path / "config.yaml")
