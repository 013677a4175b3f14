"""Which parameters get pruned: defaults, types, patterns, and the errors for bad selections."""

import re

import pytest
from torch import nn

from prunelab.errors import ConfigError
from prunelab.models import ClassifierSystem, LeNet, TextClassifier
from prunelab.pruning import PruningCallback, find_targets


def names(targets):
    return [t.name for t in targets]


def system(net):
    return ClassifierSystem(net=net, optimizer=None)


def test_default_is_conv_and_linear_weights_without_the_classifier():
    assert names(find_targets(system(LeNet()))) == [
        "net.conv1.weight", "net.conv2.weight", "net.fc1.weight"]


def test_skip_last_false_includes_the_classifier():
    assert names(find_targets(LeNet(), skip_last=False))[-1] == "fc2.weight"


def test_embedding_is_selectable_for_the_text_model():
    found = names(find_targets(TextClassifier(vocab_size=50), types=["Embedding", "Linear"]))
    assert found == ["embedding.weight", "fc1.weight"]


@pytest.mark.parametrize("pattern,expected", [
    ("net.conv*.weight", ["net.conv1.weight", "net.conv2.weight"]),
    ("re:conv[12]", ["net.conv1.weight", "net.conv2.weight"]),
])
def test_include_patterns(pattern, expected):
    assert names(find_targets(system(LeNet()), include=[pattern])) == expected


def test_include_glob_can_name_the_classifier_explicitly():
    assert names(find_targets(system(LeNet()), include=["net.fc*.weight"])) == [
        "net.fc1.weight", "net.fc2.weight"]


def test_exclude_pattern():
    assert names(find_targets(system(LeNet()), exclude=["*conv1*"])) == [
        "net.conv2.weight", "net.fc1.weight"]


@pytest.mark.parametrize("kwargs", [{"include": ["net.nothing*"]}, {"exclude": ["re:^xyz"]}])
def test_pattern_matching_nothing_is_an_error(kwargs):
    (key, (pattern,)), = kwargs.items()
    # called from Python, the message names the argument, not the command line's key
    with pytest.raises(ConfigError, match=rf"^targets.{key} pattern '{re.escape(pattern)}' matches no"):
        find_targets(system(LeNet()), **kwargs)


def test_unknown_type_lists_valid_ones():
    with pytest.raises(ConfigError, match="Conv2d"):
        find_targets(LeNet(), types=["Conv9d"])


def test_biases_and_norms_are_never_selected_by_default():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2),
                        nn.Linear(2, 2))
    assert all(t.name.endswith(".weight") for t in find_targets(net))
    assert "1.weight" not in names(find_targets(net))


def test_structured_method_on_embedding_fails_clearly():
    cb = PruningCallback([(0, 0.5)], method="ln_structured",
                         targets={"types": ["Embedding", "Linear"]})
    with pytest.raises(ConfigError, match="Embedding"):
        cb.bind(TextClassifier(vocab_size=20))
