from pathlib import Path

import pytest

from manymodels.config import config_from_dict, load_config
from manymodels.errors import ConfigError

from .conftest import write_config


def test_loads_and_resolves_paths_relative_to_the_config(tmp_path: Path):
    path = write_config(tmp_path, "data/sales.csv")
    config = load_config(path)
    assert config.datastore == str(tmp_path / "store")
    assert config.data.path == str(tmp_path / "data" / "sales.csv")
    assert config.train.horizon == 4
    assert config.data.series_key == ["Store", "Brand"]


def test_unknown_key_names_the_path_and_suggests_the_right_key(tmp_path: Path):
    path = write_config(tmp_path, "x.csv", train={"horizn": 3})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "train.horizn: unknown key" in err.value.message
    assert "Did you mean 'horizon'?" in err.value.message


def test_wrong_type_and_impossible_values_are_reported_with_key_paths(tmp_path: Path):
    path = write_config(tmp_path, "x.csv", train={"horizon": 0, "min_history": "many"})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = err.value.message
    assert "train.horizon" in text and "greater than or equal to 1" in text
    assert "train.min_history" in text


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("datastore: x\ndata:\n  path: [unclosed\n  time_column: t\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "YAML syntax error" in err.value.message and "line" in err.value.message


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert "not found" in err.value.message


def test_set_overrides_parse_yaml_values(tmp_path: Path):
    path = write_config(tmp_path, "x.csv")
    config = load_config(path, ["train.horizon=8", "forecast.quantiles=[0.9, 0.1]", "split.train_end=1992-05-28", "data.frequency=null"])
    assert config.train.horizon == 8
    assert config.forecast.quantiles == [0.1, 0.9]
    assert config.split.train_end == "1992-05-28"


def test_set_unknown_key_is_rejected_with_a_hint(tmp_path: Path):
    path = write_config(tmp_path, "x.csv")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.automl.metirc=mape"])
    assert "train.automl.metirc" in err.value.message and "metric" in err.value.message


def test_bad_date_for_train_end(tmp_path: Path):
    path = write_config(tmp_path, "x.csv", split={"train_end": "1992-13-01"})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "split.train_end" in err.value.message and "not a date: '1992-13-01'" in err.value.message


def test_holdout_and_train_end_are_exclusive(tmp_path: Path):
    path = write_config(tmp_path, "x.csv", split={"train_end": "1992-01-02", "holdout": 4})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "either train_end or holdout" in err.value.message


def test_unknown_lightgbm_parameter_is_caught_with_suggestion(tmp_path: Path):
    path = write_config(tmp_path, "x.csv", train={"params": {"num_leavs": 8}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "unknown LightGBM parameter 'num_leavs'" in err.value.message


def test_dask_engine_needs_a_scheduler(tmp_path: Path):
    path = write_config(tmp_path, "x.csv", engine={"kind": "dask"})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "scheduler" in err.value.message


def test_columns_cannot_play_two_roles(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        config_from_dict(
            {"datastore": "s", "data": {"path": "x.csv", "time_column": "t", "target_column": "y", "group_columns": ["g"], "known_future_columns": ["y"]}},
            tmp_path,
        )
    assert "target_column" in err.value.message


def test_fingerprints_change_only_with_their_sections(tmp_path: Path):
    path = write_config(tmp_path, "x.csv")
    a = load_config(path)
    b = load_config(path, ["forecast.prediction_column=Yhat"])
    assert a.section_fingerprint("train") == b.section_fingerprint("train")
    assert a.section_fingerprint("forecast") != b.section_fingerprint("forecast")


def test_automl_patience_is_at_least_one_or_null(tmp_path: Path):
    assert load_config(write_config(tmp_path, "x.csv", train={"automl": {"patience": None}})).train.automl.patience is None
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "x.csv", train={"automl": {"patience": 0}}))
    assert "train.automl.patience" in err.value.message and "greater than or equal to 1" in err.value.message
