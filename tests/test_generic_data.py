"""Generic data modules on small files the tests write in the real formats; no network."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer

from prunelab.data import ImageFolderDataModule, TextFilesDataModule, TorchvisionDataModule
from prunelab.errors import ConfigError, DataMissingError
from prunelab.pairing import check_configs, check_data
from prunelab.run import check_config, instantiate_data, instantiate_model, run

from fakedata import (
    fake_text_records,
    write_fake_torchvision_mnist,
    write_image_folder,
    write_text_csv,
    write_text_jsonl,
)


def _batches(dm, stage="fit"):
    dm.prepare_data()
    dm.setup(stage)
    return next(iter(dm.train_dataloader())), next(iter(dm.test_dataloader()))


# --------------------------------------------------------------------------- text files


def test_csv_with_named_labels_and_a_held_out_test_part(tmp_path):
    train = write_text_csv(tmp_path / "train.csv", fake_text_records(100))

    def make():
        return TextFilesDataModule(str(train), num_classes=2, val_size=0.1, test_size=0.2,
                                   batch_size=16, vocab_size=50, max_len=12)

    dm = make()
    dm.prepare_data()
    assert dm.cache_hit is False
    (ids, y), _ = _batches(dm)
    assert ids.dtype == torch.long and ids.shape[0] == 16 and ids.shape[1] <= 12
    assert set(y.tolist()) <= {0, 1}  # "neg" -> 0, "pos" -> 1 (sorted names)
    assert (len(dm.train_data[2]), len(dm.val_data[2]), len(dm.test_data[2])) == (72, 8, 20)
    # the sentiment words are in the vocabulary built from the training texts
    tokenizer = Tokenizer.from_file(str(dm.tokenizer_path))
    assert tokenizer.token_to_id("great") is not None and tokenizer.token_to_id("awful") is not None
    again = make()
    again.prepare_data()
    again.setup()
    assert again.cache_hit is True and torch.equal(again.test_data[0], dm.test_data[0])


def test_jsonl_with_integer_labels_and_a_test_file(tmp_path):
    records = [(t, i % 3) for i, (t, _) in enumerate(fake_text_records(60))]
    train = write_text_jsonl(tmp_path / "train.jsonl", records)
    test = write_text_jsonl(tmp_path / "test.jsonl", records[:15])
    dm = TextFilesDataModule(str(train), num_classes=3, test=str(test), val_size=6,
                             batch_size=8)
    (_, y), (_, test_y) = _batches(dm)
    assert len(dm.test_data[2]) == 15 and len(dm.val_data[2]) == 6
    assert torch.equal(dm.test_data[2], torch.tensor([i % 3 for i in range(15)]))


def test_tsv_with_own_field_names_and_declared_classes(tmp_path):
    records = [(t, {"neg": "bad", "pos": "good"}[y]) for t, y in fake_text_records(40)]
    train = write_text_csv(tmp_path / "train.tsv", records, delimiter="\t",
                           fields=("review", "sentiment"))
    dm = TextFilesDataModule(str(train), num_classes=2, text_field="review",
                             label_field="sentiment", classes=["good", "bad"], batch_size=8)
    dm.prepare_data()
    dm.setup()
    labels = torch.cat([dm.train_data[2], dm.val_data[2], dm.test_data[2]])
    assert labels.sum() == 20  # "bad" is class 1 by data.classes' order, half the records


@pytest.mark.parametrize(("records", "kwargs", "expected"), [
    ([("a b", "x"), ("c", "y"), ("d", "z")], {"num_classes": 2}, "holds 3 classes (x, y, z)"),
    ([("a", 0), ("b", 5)], {"num_classes": 2}, "labels run from 0 to 5"),
    ([("a", "x"), ("b", "w")], {"num_classes": 2, "classes": ["x", "y"]}, "label 'w'"),
])
def test_labels_that_do_not_fit_the_declared_classes_are_one_line(tmp_path, records, kwargs,
                                                                    expected):
    train = write_text_csv(tmp_path / "train.csv", records * 10)
    dm = TextFilesDataModule(str(train), **kwargs)
    with pytest.raises((DataMissingError, ConfigError)) as err:
        dm.prepare_data()
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_missing_column_and_missing_file_name_the_file(tmp_path):
    train = write_text_csv(tmp_path / "train.csv", [("a", 1)], fields=("body", "label"))
    with pytest.raises(DataMissingError, match=r"no column 'text' in its header \['body'"):
        TextFilesDataModule(str(train), num_classes=2).prepare_data()
    with pytest.raises(DataMissingError, match="nope.csv not found"):
        TextFilesDataModule(str(tmp_path / "nope.csv"), num_classes=2).prepare_data()
    with pytest.raises(ConfigError, match="unknown text file format '.txt'"):
        TextFilesDataModule(str(tmp_path / "a.txt"), num_classes=2).prepare_data()


# --------------------------------------------------------------------------- images


def test_image_folder_with_train_and_test_parts(tmp_path):
    root = write_image_folder(tmp_path / "img", n_per_class=10)
    dm = ImageFolderDataModule(str(root), num_classes=3, val_size=3, batch_size=4)
    (x, y), (tx, ty) = _batches(dm)
    assert x.dtype == torch.float32 and list(x.shape) == [4, 3, 8, 8]
    assert dm.sample_shape == [3, 8, 8] and len(dm.test_data[1]) == 30
    assert len(dm.train_data[1]) == 27 and dm.train_data[0].dtype == torch.uint8
    # standardised with the training images' per-channel statistics
    full = dm._loader(dm.train_data, 1000, shuffle=False)
    xs = next(iter(full))[0]
    assert xs.mean().abs() < 1e-4 and xs.transpose(0, 1).reshape(3, -1).std(1).sub(1).abs().max() < 1e-3


def test_image_folder_single_part_grayscale_and_resize(tmp_path):
    root = write_image_folder(tmp_path / "img", classes=("a", "b"), size=(6, 10), mode="L",
                              splits=())
    dm = ImageFolderDataModule(str(root), num_classes=2, image_size=[8, 8], val_size=0.25,
                               test_size=0.25, batch_size=4)
    (x, _), _ = _batches(dm)
    assert list(x.shape[1:]) == [1, 8, 8] and len(dm.test_data[1]) == 6


def test_image_folder_class_count_must_match(tmp_path):
    root = write_image_folder(tmp_path / "img")
    with pytest.raises(DataMissingError, match=r"holds 3 class folders \(cat, dog, eel\), "
                                               r"data.num_classes=10: set data.num_classes=3"):
        ImageFolderDataModule(str(root), num_classes=10).prepare_data()


def test_torchvision_data_set_by_name_from_local_files(tmp_path):
    write_fake_torchvision_mnist(tmp_path, "FashionMNIST", n_train=60, n_test=20)
    dm = TorchvisionDataModule("FashionMNIST", str(tmp_path), num_classes=10, val_size=10,
                               batch_size=5)
    (x, y), (tx, ty) = _batches(dm)
    assert list(x.shape) == [5, 1, 28, 28] and len(dm.test_data[1]) == 20
    assert len(dm.train_data[1]) == 50


def test_torchvision_unknown_name_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="'FashionMnist' is not a torchvision image data set; "
                                          "closest: FashionMNIST"):
        TorchvisionDataModule("FashionMnist", str(tmp_path), num_classes=10)
    dm = TorchvisionDataModule("KMNIST", str(tmp_path), num_classes=10)
    with pytest.raises(DataMissingError, match="torchvision KMNIST not found under") as err:
        dm.prepare_data()
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- compatibility


def test_declared_pairs_are_checked_before_data():
    image = {"name": "cnn", "input": "image", "num_classes": 10, "input_shape": [1, 28, 28]}
    with pytest.raises(ConfigError, match="model=cnn takes image input, data=imdb gives tokens"):
        check_configs(image, {"name": "imdb", "input": "tokens", "num_classes": 2})
    with pytest.raises(ConfigError, match="predicts 10 classes .* data=image_folder has 3"):
        check_configs(image, {"name": "image_folder", "input": "image", "num_classes": 3})
    with pytest.raises(ConfigError, match=r"shape \[1, 28, 28\] .* gives \[3, 32, 32\]"):
        check_configs(image, {"name": "x", "input": "image", "input_shape": [3, 32, 32]})
    check_configs(image, {"name": "FashionMNIST", "input": "image", "num_classes": 10})


def test_found_shape_is_checked_after_the_files_are_read(tmp_path):
    root = write_image_folder(tmp_path / "img")
    dm = ImageFolderDataModule(str(root), num_classes=10 - 7)
    dm.prepare_data()
    model = {"name": "cnn", "num_classes": 3, "input_shape": [1, 28, 28]}
    with pytest.raises(ConfigError, match=r"gives \[3, 8, 8\]: choose a model"):
        check_data(model, "image_folder", dm)


def test_a_net_with_the_wrong_outputs_is_one_line(make_cfg):
    from torch import nn

    from prunelab.models import ClassifierSystem

    system = ClassifierSystem(nn.Sequential(nn.Flatten(), nn.Linear(784, 7)),
                              optimizer=torch.optim.SGD, num_classes=10)
    batch = (torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"logits of shape \[4, 7\] .* needs \[4, 10\]"):
        system.loss_and_logits(batch)
    small = ClassifierSystem(nn.Sequential(nn.Flatten(), nn.Linear(100, 10)),
                             optimizer=torch.optim.SGD, num_classes=10)
    with pytest.raises(ConfigError, match=r"cannot take the data's batches of inputs \[4, 1, 28"):
        small.loss_and_logits(batch)


# --------------------------------------------------------------------------- whole runs


@pytest.mark.parametrize("pair", ["text_files", "image_folder", "torchvision"])
def test_generic_data_through_a_pruned_run(make_cfg, tmp_path, pair):
    if pair == "text_files":
        write_text_csv(tmp_path / "text" / "train.csv", fake_text_records(160))
        overrides = ["model=text", "data=text_files"]
    elif pair == "image_folder":
        write_image_folder(tmp_path / "images", size=(28, 28), mode="L", n_per_class=40)
        overrides = ["model=cnn", "data=image_folder", "data.num_classes=3",
                     "model.num_classes=3", "+model.net.num_classes=3"]
    else:
        write_fake_torchvision_mnist(tmp_path, "KMNIST", n_train=200, n_test=40)
        overrides = ["model=cnn", "data=torchvision", "data.dataset=KMNIST"]
    cfg = make_cfg(*overrides, f"data_dir={tmp_path}", "pruning=one_shot",
                   "pruning.schedule.start_epoch=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                   "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")
    check_config(cfg)
    assert instantiate_data(cfg) is not None and instantiate_model(cfg) is not None
    r = run(cfg, tmp_path / "run")
    assert r["status"] == "ok" and r["data"] == cfg.data.name
    assert r["sparsity_global"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.slow  # 15 s idle: a ResNet-18 through training, pruning, compaction, latency
def test_torchvision_resnet_through_a_compacted_run(make_cfg, tmp_path):
    write_fake_torchvision_mnist(tmp_path, "KMNIST", n_train=200, n_test=40)
    cfg = make_cfg("model=torchvision", "model.arch=resnet18", "data=torchvision",
                   "data.dataset=KMNIST", "model.net.in_channels=1", f"data_dir={tmp_path}",
                   "pruning=one_shot", "pruning.schedule.start_epoch=0", "pruning/method=ln_structured",
                   "pruning.compact=true", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                   "trainer.limit_test_batches=1")
    r = run(cfg, tmp_path / "run")
    assert r["status"] == "ok" and r["model"] == "torchvision" and r["data"] == "KMNIST"
    assert r["params_compact"] < r["params_total"]
    assert (tmp_path / "run" / "compact_model.pt2").is_file()
