"""Adding a strategy or an attack is local: one file each (tests/toys/), picked up by every consumer.

Files touched to add them (the point of the registries):

* strategy ``toy_avg``: ``tests/toys/toy_strategy.py`` (builder + ``register_strategy``);
* attack ``toy_nearest``: ``tests/toys/toy_attack.py`` (run + threat model + ``register_attack``).

Nothing else changed: FedConfig's check, ``strategy_args``, ``build_strategy``, the state
handler, the secure/DP compatibility checks, the sweep's dispatch and the CLI's choices
all read the registries.
"""

import json
import zlib

import numpy as np
import pytest

from fedicd.errors import ConfigError
from fedicd.federated.config import FedConfig
from fedicd.strategies import (STRATEGIES, UpdateValidator, build_strategy, check_compatible, secure_strategies,
                               strategy_state, unregister_strategy)


@pytest.fixture
def toy_strategy():
    from fedicd.strategies import register_strategy
    from tests.toys import toy_strategy

    register_strategy(toy_strategy.SPEC, replace=True)  # registered on first import; again after a cleanup
    yield toy_strategy
    unregister_strategy(toy_strategy.NAME)


@pytest.fixture
def toy_attack():
    from fedicd.attack_runs.registry import register_attack, unregister_attack
    from tests.toys import toy_attack

    register_attack(toy_attack.SPEC, replace=True)
    yield toy_attack
    unregister_attack(toy_attack.NAME)


def test_a_strategy_in_one_file_reaches_config_build_state_and_checks(toy_strategy):
    name = toy_strategy.NAME
    assert STRATEGIES[name] is toy_strategy.SPEC and toy_strategy.SPEC.build.__module__ == toy_strategy.__name__
    fed = FedConfig(strategy=name, server_lr=0.5)  # config load accepts it (no Flower needed for the check)
    args = fed.strategy_args(4)
    strategy = build_strategy(name, **args)
    assert isinstance(strategy, UpdateValidator) and isinstance(strategy.strategy, toy_strategy.ToyAvg)
    assert strategy.strategy.server_lr == 0.5 and strategy.strategy.min_train_nodes == 2
    assert strategy_state(strategy) == {}  # stateless: no state handler to write
    assert name in secure_strategies("secagg+") and name not in secure_strategies("ckks")
    with pytest.raises(ConfigError, match=f"federated.strategy = '{name}' cannot run under secure aggregation"):
        check_compatible(name, secure_method="ckks")
    with pytest.raises(ConfigError, match=f"strategy '{name}' changes the aggregate on the server"):
        check_compatible(name, dp="client")
    check_compatible(name, dp="sample")


def test_unregistered_toy_strategy_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="federated.strategy must be one of"):
        FedConfig(strategy="toy_avg")


def test_an_attack_in_one_file_reaches_the_cli_choices(toy_attack):
    from fedicd.attack_runs import attack_names, attack_spec
    from fedicd.cli import build_parser

    assert toy_attack.NAME in attack_names("invert") and toy_attack.NAME not in attack_names("attribute")
    assert attack_spec(toy_attack.NAME).threat_model.startswith("Holds victims' embeddings and public notes")
    attack = next(a for a in build_parser()._subparsers._group_actions[0].choices["attack"]._actions
                  if a.dest == "method")
    assert toy_attack.NAME in attack.choices  # the CLI reads fedicd.attack_runs.attack_names("invert")


def _bag_of_words(texts, cfg, *, cache=True):
    out = np.zeros((len(texts), 64), np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.encode()) % 64] += 1.0
    return out


def test_an_attack_in_one_file_runs_through_the_sweep(toy_attack, tmp_path, monkeypatch):
    import fedicd.attack_runs.data as attack_data
    from fedicd.attack_runs import run_attack_sweep
    from fedicd.cli import DEMO_CONFIG
    from fedicd.config import load_config
    from tests.corpora import SITE_CORPUS, write_small_site_corpus

    monkeypatch.setattr(attack_data, "embed", _bag_of_words)
    path = write_small_site_corpus(tmp_path / "c.csv")
    sets = [f"data.{k}={json.dumps(v)}" for k, v in SITE_CORPUS.items()]
    sets += [f"data.path={json.dumps(str(path))}", "data.min_train_count=1", "train.epochs=1",
             f"cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    rows = run_attack_sweep(load_config(DEMO_CONFIG, sets), toy_attack.NAME, tmp_path / "out", defences=["none"],
                            progress=False)
    assert [r["metric"] for r in rows] == ["hit@1"] and 0 <= rows[0]["leakage"]["value"] <= 1
    report = json.loads((tmp_path / "out" / f"{toy_attack.NAME}_none.json").read_text())
    assert report["threat_model"].startswith("Holds victims' embeddings")


def test_unknown_attack_lists_the_registered_ones(tmp_path):
    from fedicd.attack_runs import run_attack_sweep

    with pytest.raises(ConfigError, match="unknown attack 'magic'; use bow, generative or attribute"):
        run_attack_sweep(None, "magic", tmp_path / "out", defences=["none"])
