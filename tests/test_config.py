import pytest

from fedicd.config import DataConfig, apply_overrides, config_from_dict, config_to_dict, load_config
from fedicd.errors import ConfigError


def test_toml_sections_map_to_dataclasses(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\nseed = 3\n[data]\nsource = "codiesp"\npath = "/d"\ntrain_parts = ["train", "val"]\n'
                    '[train]\nhead = "deep_mlp"\nhidden = [64, 32]\n[embedding]\nchunk_overlap = 16\n')
    cfg = load_config(path, ["train.epochs=3", "data.language='es'"])
    assert cfg.name == "x" and cfg.seed == 3
    assert cfg.data.train_parts == ("train", "val") and cfg.data.language == "es"
    assert cfg.train.hidden == (64, 32) and cfg.train.epochs == 3 and cfg.embedding.chunk_overlap == 16
    assert config_from_dict(config_to_dict(cfg)) == cfg  # resolved config round-trips


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\] in \[train\]; valid keys: \["):
        config_from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) \['secure'\]"):
        config_from_dict({"secure": {}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epsilon'\] in \[privacy\]"):
        config_from_dict({"privacy": {"epsilon": 3}})
    with pytest.raises(ConfigError, match="data.path is required for data.source = 'codiesp'"):
        DataConfig(source="codiesp")
    with pytest.raises(ConfigError, match="data.source must be one of"):
        DataConfig(source="parrot")
    with pytest.raises(ConfigError, match="never 'test'"):
        DataConfig(train_parts=("train", "test"))
    with pytest.raises(ConfigError, match=r"\[train\]: epochs must be >= 1"):
        config_from_dict({"train": {"epochs": 0}})
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "none.toml")


def test_training_alias_and_federated_section():
    cfg = config_from_dict({"training": {"mode": "federated"}, "federated": {"rounds": 7, "strategy": "scaffold"}})
    assert cfg.train.mode == "federated" and cfg.federated.rounds == 7
    with pytest.raises(ConfigError, match="either \\[train\\] or \\[training\\]"):
        config_from_dict({"training": {}, "train": {}})
    with pytest.raises(ConfigError, match="federated.fault_kind must be one of"):
        config_from_dict({"federated": {"fault_kind": "byzantine"}})


def test_overrides_parse_toml_values_and_reject_garbage():
    out = apply_overrides({}, ["train.lr=0.01", "data.train_parts=['train']", "name=plain text"])
    assert out == {"train": {"lr": 0.01}, "data": {"train_parts": ["train"]}, "name": "plain text"}
    with pytest.raises(ConfigError, match="expects key=value"):
        apply_overrides({}, ["train.lr"])
