"""``docs/results/scale.md`` rendered from archived scale records (fedicd.report.scale)."""

import json

from fedicd.report.scale import BUDGET_MB, GENERATED, TITLE, cluster_section, render_scale, scale_table


def _record(engine="inprocess", n=1000, peak=950.4, **extra):
    rec = {"config": "experiments/configs/synthetic_fed_large.toml", "overrides": ["partition.n_clients=1000"],
           "engine": engine, "rounds": 50, "n_clients": n, "clients_per_round": 100, "client_size_min": 16,
           "client_size_max": 17, "peak_rss_mb": peak,
           "memory": {"method": "VmRSS of the tree", "peak_tree_pss_mb": 901.6},
           "seconds_per_round_mean": 2.51234, "seconds_per_round_median": 2.4, "first_round_seconds": 4.0,
           "seconds_per_round_after_first_mean": 2.4789,
           "test_micro_f1": 0.61234, "test_macro_f1": 0.1234, "cpu_count": 2, "load_average_at_end": [3.456, 2, 1],
           "git_commit": "abc123+dirty", "command": "nice -n 10 python experiments/scale_simulation.py --archive"}
    rec.update(extra)
    return rec


def _write(tmp_path, records, check=None):
    folder = tmp_path / "scale"
    folder.mkdir()
    for name, rec in records.items():
        (folder / name).write_text(json.dumps(rec))
    if check is not None:
        (folder / "ray_cluster_check.json").write_text(json.dumps(check))
    return tmp_path


def test_one_row_per_simulation_inprocess_first_with_the_budget_verdict(tmp_path):
    root = _write(tmp_path, {"scale_1000_ray.json": _record("ray", peak=BUDGET_MB + 0.1, rounds=3),
                             "scale_1000.json": _record()})
    page = render_scale(root)
    assert page.startswith(f"# {TITLE}\n\n{GENERATED}\n")
    assert ("| inprocess | 1000 | 100 | 16–17 | 50 | 950 | 902 | yes | 2.5123 | 2.4000 | 4.0000 | 2.4789 | 0.6123 | 0.1234 "
            "| 2 | 3.46 |") in page
    assert "| ray | 1000 | 100 | 16–17 | 3 | 8192 | 902 | no |" in page
    assert page.index("| inprocess |") < page.index("| ray |")
    assert ("- inprocess, 1000 clients: `nice -n 10 python experiments/scale_simulation.py --archive` at "
            "`abc123+dirty`; overrides `partition.n_clients=1000` on `experiments/configs/synthetic_fed_large.toml`"
            ) in page
    assert "Memory method: VmRSS of the tree." in page


def test_equal_client_sizes_show_one_number():
    table = scale_table([_record(client_size_min=24, client_size_max=24)])
    assert table.rows[0][3] == "24" and table.rows[0][7] is True


def test_an_empty_folder_says_what_to_run(tmp_path):
    page = render_scale(tmp_path)
    assert "No simulation is archived yet (`python experiments/scale_simulation.py --archive`)." in page
    assert "No cluster check is archived yet (see `docs/simulation-at-scale.md`)." in page
    assert page.endswith("\n") and not page.endswith("\n\n")


def test_the_cluster_check_lists_outcome_cluster_run_and_commands():
    check = {"what": "A one-node cluster.", "outcome": "accepted and ran", "ray_address": "auto",
             "ray_address_env": "127.0.0.1:6390", "cluster_nodes": 1, "cluster_cpus": 2.0,
             "run": {"returncode": 0, "n_clients": 4, "rounds": 2, "test_micro_f1": 0.5, "seconds": 41.26,
                     "drivers_joined_cluster": 1},
             "leftover_processes": 0, "git_commit": "abc", "commands": ["ray start --head --port 6390 &"]}
    expected = [
        "## Ray cluster", "", "A one-node cluster.", "", "- outcome: **accepted and ran**",
        "- cluster: 1 node(s), 2 CPUs",
        '- `federated.ray_address = "auto"` with RAY_ADDRESS `127.0.0.1:6390`: exit 0, 4 clients, 2 rounds, '
        "test micro-F1 0.5000, 41.3 s; drivers that joined the cluster: 1",
        "- Ray processes left after the clean-up: 0", "- commit: `abc`", "", "Commands:", "",
        "    ray start --head --port 6390 &", ""]
    assert cluster_section(check) == expected
    failed = {**check, "client_outcome": "failed", "client_run": {"returncode": 1, "seconds": 3.04}}
    assert cluster_section(failed)[7] == ("- through Ray's client server (`ray://`): failed: exit 1, — clients, — rounds, "
                                          "test micro-F1 —, 3.0 s; drivers that joined the cluster: —")
