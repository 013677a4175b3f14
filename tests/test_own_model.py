"""A user's config dir extends the built-in groups (examples/own_model), checked up front."""

from __future__ import annotations

import pytest

from prunelab.choices import check_command_line
from prunelab.errors import ConfigError
from prunelab.paths import CONF_DIR

from conftest import ROOT

USER_CONF = str(ROOT / "examples" / "own_model" / "conf")


def test_user_groups_merge_with_the_built_in_ones():
    check_command_line(CONF_DIR, ["--config-dir", USER_CONF, "model=mymlp", "data=mycsv"])
    check_command_line(CONF_DIR, ["--config-dir", USER_CONF, "model=cnn", "data=mnist"])
    with pytest.raises(ConfigError, match="did you mean mymlp.*cnn"):
        check_command_line(CONF_DIR, ["--config-dir", USER_CONF, "model=mymlpp"])


def test_own_model_without_a_data_set_asks_for_one_in_one_line():
    with pytest.raises(ConfigError) as err:
        check_command_line(CONF_DIR, ["--config-dir", USER_CONF, "model=mymlp"])
    msg = str(err.value)
    assert "model=mymlp has no data set of its own" in msg and "mycsv" in msg
    assert "text_files" in msg and "\n" not in msg
    check_command_line(CONF_DIR, ["model=text"])  # a built-in model picks its own


def test_own_model_composes_and_instantiates(tiny_data, tmp_path):
    import sys

    from hydra import compose

    from prunelab import confsource
    from prunelab.run import check_config, instantiate_model

    from fakedata import fake_text_records, write_text_csv

    write_text_csv(tmp_path / "reviews" / "train.csv", fake_text_records(40))
    sys.path.insert(0, str(ROOT / "examples" / "own_model"))
    try:
        with confsource.initialize():
            cfg = compose("config", overrides=[
                "model=mymlp", "data=mycsv", f"data_dir={tmp_path}",
                f"hydra.searchpath=[file://{USER_CONF}]"])
        check_config(cfg)
        system = instantiate_model(cfg)
    finally:
        sys.path.remove(str(ROOT / "examples" / "own_model"))
    assert type(system.net).__name__ == "BagOfWordsMLP" and system.net.fc2.out_features == 2
    assert cfg.data.classes == ["neg", "pos"] and cfg.data._target_.endswith("TextFilesDataModule")
