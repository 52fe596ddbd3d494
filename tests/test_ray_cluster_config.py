"""``federated.ray_address``: which Ray cluster addresses a config accepts, and what reaches ``ray.init``.

No Ray is started: the last tests run Flower 1.42's own RayBackend constructor with ``ray.init`` replaced by a
recorder, so they check the keywords Ray would receive (experiments/results/scale/ray_cluster_check.json records a
run on a real local cluster).
"""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.config import load_config
from fedicd.errors import ConfigError
from fedicd.federated.config import FedConfig
from fedicd.run_plan import read_plan, write_plan
from fedicd.runner.simulation import backend_config
from fedicd.runner.staging import build_plan


def _plan(*extra: str):
    cfg = load_config(None, ['train.mode="federated"', "partition.n_clients=3", *extra])
    return build_plan(cfg, input_dim=8, n_labels=4, client_sizes=[40, 50, 60])


@pytest.mark.parametrize("address", ["", "auto", "ray://10.0.0.5:10001", "ray://head.cluster.local:10001"])
def test_the_addresses_ray_knows_are_accepted(address):
    cfg = load_config(None, [f'federated.ray_address="{address}"'])
    assert cfg.federated.ray_address == address
    assert cfg.federated.engine == "ray"


def test_a_config_file_may_name_the_cluster(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text('name = "c"\n[train]\nmode = "federated"\n[federated]\nray_address = "auto"\ntotal_cpus = 64\n'
                    "client_cpus = 2.0\n", encoding="utf-8")
    fed = load_config(path).federated
    assert (fed.ray_address, fed.total_cpus, fed.client_cpus) == ("auto", 64, 2.0)


@pytest.mark.parametrize("address", ["10.0.0.5:6379", "local", "http://10.0.0.5:8265", "AUTO"])
def test_other_addresses_are_refused_naming_what_is_allowed(address):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f'federated.ray_address="{address}"'])
    assert str(err.value) == (f"federated.ray_address must be '' (a local Ray), 'auto' or 'ray://host:port', "
                              f"got {address!r}")


@settings(deadline=None, max_examples=60)
@given(st.text(max_size=30))
def test_only_empty_auto_or_a_ray_client_address_pass(address):
    ok = address == "" or address == "auto" or address.startswith("ray://")
    try:
        FedConfig(ray_address=address)
    except ConfigError as err:
        assert not ok and "federated.ray_address must be" in str(err)
    else:
        assert ok


def test_a_cluster_needs_the_ray_engine():
    with pytest.raises(ConfigError) as err:
        load_config(None, ['federated.ray_address="auto"', 'federated.engine="inprocess"'])
    assert str(err.value) == "federated.ray_address = 'auto' needs federated.engine = 'ray', got 'inprocess'"


def test_the_address_travels_in_the_run_plan(tmp_path):
    plan = _plan('federated.ray_address="ray://10.0.0.5:10001"')
    write_plan(tmp_path, plan)
    assert json.loads((tmp_path / "run_plan.json").read_text())["federated"]["ray_address"] == "ray://10.0.0.5:10001"
    assert read_plan(tmp_path).federated.ray_address == "ray://10.0.0.5:10001"


def test_a_local_ray_gets_the_runs_cpus_and_ignores_other_clusters():
    plan = _plan("federated.total_cpus=6", "federated.client_cpus=1.5")
    assert backend_config(plan, quiet=False) == {
        "client_resources": {"num_cpus": 1.5, "num_gpus": 0.0},
        "init_args": {"address": "local", "num_cpus": 6, "num_gpus": 0}}


@pytest.mark.parametrize("address", ["auto", "ray://10.0.0.5:10001"])
def test_a_cluster_gets_its_address_and_no_cpu_count(address):
    plan = _plan(f'federated.ray_address="{address}"', "federated.total_cpus=6", "federated.client_cpus=2.0")
    assert backend_config(plan, quiet=True) == {
        "client_resources": {"num_cpus": 2.0, "num_gpus": 0.0},
        "init_args": {"address": address, "logging_level": "ERROR", "log_to_driver": False}}


def _ray_init_kwargs(monkeypatch, config: dict) -> dict:
    """The keywords Flower 1.42's RayBackend passes to ``ray.init`` for ``config`` (ray.init replaced)."""
    from flwr.server.superlink.fleet.vce.backend import raybackend

    seen: dict = {}
    monkeypatch.setenv("PYTHONPATH", "")  # RayBackend extends it; monkeypatch restores it
    monkeypatch.setattr(raybackend.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(raybackend.ray, "init", lambda **kw: seen.update(kw))
    backend = raybackend.RayBackend(config)
    assert backend.client_resources == config["client_resources"]
    return seen


def test_flowers_ray_backend_hands_a_cluster_address_to_ray_init(monkeypatch):
    seen = _ray_init_kwargs(monkeypatch, backend_config(_plan('federated.ray_address="auto"'), quiet=True))
    assert {k: v for k, v in seen.items() if k != "runtime_env"} == {
        "address": "auto", "logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False}
    assert "num_cpus" not in seen and set(seen["runtime_env"]) == {"env_vars"}


def test_every_init_arg_is_a_ray_init_keyword(monkeypatch):
    import inspect

    import ray

    params = set(inspect.signature(ray.init).parameters)
    for address in ("", "auto", "ray://h:10001"):
        for quiet in (False, True):
            init = backend_config(_plan(f'federated.ray_address="{address}"'), quiet=quiet)["init_args"]
            assert set(init) <= params, set(init) - params
    seen = _ray_init_kwargs(monkeypatch, backend_config(_plan(), quiet=False))
    assert (seen["address"], seen["num_cpus"], seen["num_gpus"]) == ("local", 2, 0)
