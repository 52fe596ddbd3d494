"""`fedicd audit` and the battery: one report per attack, a summary that keeps every failure, named refusals.

The battery's machinery is tested with fake attacks on a run of random arrays (no encoder, no training);
the real battery runs end to end on a tiny synthetic federation under ``-m model``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from attacks import AttackReport
from attacks.scoring import summarize
from fedicd.attack_runs.audit_command import INPROCESS_OVERRIDE, NotAFederationError, engine_overrides, audit
from fedicd.attack_runs.battery import BATTERY, BatteryAttack, battery_names, resolve_attacks, run_battery
from fedicd.attack_runs.federation import FederationRun
from fedicd.cli import DEMO_CONFIG, main
from fedicd.errors import ConfigError


def _run(tmp_path: Path, dp: str = "none") -> FederationRun:
    rng = np.random.default_rng(0)
    plan = SimpleNamespace(privacy=SimpleNamespace(dp=dp, delta=1e-5, target_epsilon=8.0 if dp != "none" else 0.0),
                           secure=SimpleNamespace(method="none"), n_clients=2, seed=0,
                           federated=SimpleNamespace(rounds=3), config={"privacy": {"embedding_noise": 0.0}})
    feats = {f"x_{p}": rng.normal(size=(20, 8)).astype(np.float32) for p in ("train", "val", "test")}
    results = {"test": {"micro_f1": 0.5, "macro_f1": 0.25},
               "privacy": {"epsilon": 8.0 if dp != "none" else None}}
    return FederationRun(tmp_path / "run", plan, feats, [np.arange(10), np.arange(10, 20)], np.zeros(8), np.ones(8),
                         {}, results)


def _report(kind: str, values: list[float], **settings) -> AttackReport:
    return AttackReport(kind, summarize({"auc": values}, seed=0), settings=settings,
                        baselines=summarize({"auc": [0.5, 0.5]}, seed=0))


CALLS: list[str] = []


def _ok(run, *, seed, quick, **options):
    CALLS.append("ok")
    return [_report("membership_inference", [0.9, 0.7], attack="lira", target="final model"),
            _report("membership_inference", [0.6, 0.6], attack="rmia", target="client update")]


def _broken(run, *, seed, quick, **options):
    CALLS.append("broken")
    raise RuntimeError("division by zero in the inverter")


def _outside(run, *, seed, quick, **options):
    CALLS.append("outside")
    raise ConfigError("the run has no client updates to invert")


def _dp_only(run, *, seed, quick, **options):
    CALLS.append("dp_only")
    return [_report("dp_audit", [1.0, 2.0])]


FAKE = (BatteryAttack("ok", _ok, ("auc",)), BatteryAttack("broken", _broken), BatteryAttack("outside", _outside),
        BatteryAttack("dp_only", _dp_only, needs_dp=True))


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


def test_every_report_is_written_and_every_failure_is_in_the_summary(tmp_path):
    summary = run_battery(_run(tmp_path), tmp_path / "out", battery=FAKE, quick=True)
    out = tmp_path / "out"
    assert CALLS == ["ok", "broken", "outside"]  # the DP-only attack is not called on a run without DP
    assert [(r["attack"], r["status"]) for r in summary["rows"]] == [
        ("ok", "ok"), ("ok", "ok"), ("broken", "failed"), ("outside", "skipped"), ("dp_only", "skipped")]
    first = summary["rows"][0]
    assert first["metric"] == "auc" and first["value"] == pytest.approx(0.8) and first["baseline"] == 0.5
    assert first["variant"] == "lira / final model" and first["file"] == "reports/ok_0.json"
    assert AttackReport.load(out / "reports/ok_1.json").settings["attack"] == "rmia"
    assert sorted(p.name for p in (out / "reports").iterdir()) == ["ok_0.json", "ok_1.json"]
    assert summary["rows"][2]["error"] == "RuntimeError: division by zero in the inverter"
    assert summary["rows"][3]["error"] == "the run has no client updates to invert"
    assert "no ε to audit" in summary["rows"][4]["error"]
    assert summary["failed"] == ["broken"] and summary["skipped"] == ["outside", "dp_only"]
    assert json.loads((out / "summary.json").read_text())["rows"] == summary["rows"]
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "skipped", "skipped"]
    md = (out / "summary.md").read_text()
    assert "RuntimeError: division by zero in the inverter" in md and "micro-F1 = 0.5000" in md
    assert (out / "summary.png").stat().st_size > 1000


def test_an_attack_asked_for_by_name_propagates_its_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no client updates to invert"):
        run_battery(_run(tmp_path), tmp_path / "out", attacks=["ok", "outside"], battery=FAKE)


def test_the_audit_asked_for_on_a_run_without_dp_is_refused_before_any_attack(tmp_path):
    with pytest.raises(ConfigError, match=r"'dp_only' audits a differential-privacy claim, .* without DP"):
        run_battery(_run(tmp_path), tmp_path / "out", attacks=["ok", "dp_only"], battery=FAKE)
    assert CALLS == []


def test_a_dp_run_gets_its_audit_and_the_defence_is_read_from_the_plan(tmp_path):
    summary = run_battery(_run(tmp_path, dp="sample"), tmp_path / "out", attacks=["dp_only"], battery=FAKE,
                          options={"dp_only": {"extra": 1}})
    assert CALLS == ["dp_only"] and summary["rows"][0]["kind"] == "dp_audit"
    assert summary["defence"] == {"dp": "sample", "epsilon": 8.0, "delta": 1e-5, "target_epsilon": 8.0,
                                  "secure_aggregation": "none", "embedding_noise": 0.0, "clients": 2, "rounds": 3}


def test_options_for_an_attack_outside_the_battery_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"options for unknown attack\(s\) \['lira'\]; valid: ok, broken"):
        run_battery(_run(tmp_path), tmp_path / "out", battery=FAKE, options={"lira": {"n_refs": 2}})
    assert CALLS == []


def test_a_bad_return_value_is_a_recorded_failure(tmp_path):
    bad = (BatteryAttack("bad", lambda run, *, seed, quick: {"auc": 1.0}),)
    summary = run_battery(_run(tmp_path), tmp_path / "out", battery=bad)
    assert summary["rows"] == [{**summary["rows"][0], "status": "failed",
                                "error": "TypeError: attack 'bad' returned dict, not a list of AttackReport"}]


def test_unknown_attack_names_list_the_valid_ones():
    assert battery_names() == ("embedding_inversion", "attribute", "update_inversion", "membership", "audit")
    with pytest.raises(ConfigError, match="unknown attack 'lira' for the battery; valid: embedding_inversion, "
                                          "attribute, update_inversion, membership, audit"):
        resolve_attacks(["membership", "lira"])
    with pytest.raises(ConfigError, match="--attacks is empty"):
        resolve_attacks([])
    assert [a.name for a in resolve_attacks(["audit", "membership"])] == ["membership", "audit"]  # battery order
    assert [a.name for a in resolve_attacks(None)] == [a.name for a in BATTERY]


def test_the_inprocess_engine_is_the_default_unless_the_config_names_one(tmp_path):
    plain = tmp_path / "a.toml"
    plain.write_text('[train]\nmode = "federated"\n')
    named = tmp_path / "b.toml"
    named.write_text('[federated]\nengine = "ray"\n')
    assert engine_overrides(plain, ["seed=1"]) == [INPROCESS_OVERRIDE, "seed=1"]
    assert engine_overrides(named, ["seed=1"]) == ["seed=1"]
    assert engine_overrides(plain, ['federated.engine="ray"']) == ['federated.engine="ray"']


def test_a_central_config_is_refused_by_name(tmp_path):
    with pytest.raises(NotAFederationError, match="train.mode = 'central'; the battery attacks a federation"):
        audit(DEMO_CONFIG, tmp_path / "out")


def test_the_audit_on_a_config_without_dp_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="names the DP audit, but .* trains without DP"):
        audit(DEMO_CONFIG, tmp_path / "out", attacks=["audit"], overrides=['train.mode="federated"'])


def _unfinished(tmp_path: Path, rounds_done: int | None) -> Path:
    from fedicd.config import load_config
    from fedicd.federated.checkpoint import save_checkpoint
    from fedicd.run_plan import write_plan
    from fedicd.runner.staging import build_plan

    cfg = load_config(DEMO_CONFIG, ['train.mode="federated"', "federated.rounds=3"])
    run = tmp_path / "run"
    run.mkdir()
    write_plan(run, build_plan(cfg, input_dim=8, n_labels=3, client_sizes=[10, 10]))
    if rounds_done is not None:
        save_checkpoint(run, server_round=rounds_done, arrays={"w": np.zeros(2)}, strategy_state={}, history=[],
                        rejections=[])
    return run


def test_a_run_folder_that_never_finished_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no checkpoint: the federated run never finished a round"):
        audit(_unfinished(tmp_path, None), tmp_path / "out")


def test_a_run_folder_stopped_early_is_refused_and_overrides_are_refused_with_a_folder(tmp_path, capsys):
    run = _unfinished(tmp_path, 1)
    with pytest.raises(ValueError, match="stopped after round 1 of 3; resume it"):
        audit(run, tmp_path / "out")
    with pytest.raises(ConfigError, match="--set applies to a config, but .* is a run folder"):
        audit(run, tmp_path / "out", overrides=["seed=1"])


def test_the_cli_names_its_errors(tmp_path, capsys):
    assert main(["audit", str(DEMO_CONFIG), "--out", str(tmp_path / "o1"), "--attacks", "nope"]) == 2
    assert "fedicd audit: error: unknown attack 'nope' for the battery; valid: embedding_inversion" in \
        capsys.readouterr().err
    assert main(["audit", str(DEMO_CONFIG), "--out", str(tmp_path / "o2")]) == 2
    assert "the battery attacks a federation" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # nothing written: --out is given back


@pytest.mark.model
def test_fedicd_audit_end_to_end_on_a_tiny_synthetic_federation(tmp_path, capsys, fed_cache):
    """The tiny federation of the federated tests (150 notes, 3 clients; its embeddings cached once per session)
    with DP-SGD, so that every attack of the battery applies; quick attacks."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(DEMO_CONFIG.read_text())
    sets = ["data.n_notes=150", "data.n_codes=30", "data.min_train_count=3", "embedding.max_tokens=128",
            'train.mode="federated"', "federated.rounds=2", "partition.n_clients=3", "partition.min_partition_size=5",
            "federated.fraction_evaluate=1.0", f'cache_dir="{fed_cache}"', 'privacy.dp="sample"',
            "privacy.target_epsilon=8.0"]
    code = main(["audit", str(cfg), "--out", str(tmp_path / "audit"), "--quick",
                 *[x for s in sets for x in ("--set", s)]])
    out = tmp_path / "audit"
    summary = json.loads((out / "summary.json").read_text())
    assert code == (1 if summary["failed"] else 0), summary["failed"]
    assert (out / "run" / "results.json").exists() and summary["defence"]["dp"] == "sample"
    assert summary["defence"]["epsilon"] == pytest.approx(8.0, rel=0.05)
    assert {r["attack"] for r in summary["rows"]} == set(battery_names())  # every attack: a report, or its error
    for r in summary["rows"]:
        if r["status"] == "ok":
            assert AttackReport.load(out / r["file"]).metrics[r["metric"]]["value"] == pytest.approx(r["value"])
        else:
            assert r["error"]
    assert "reports: " in capsys.readouterr().out


def _attack_data(run: FederationRun, seed: int = 0):
    """The run's notes as the attacks would load them: texts whose words are the vectors' large coordinates."""
    from fedicd.attack_runs.data import AttackData

    vocab = [f"w{i}" for i in range(8)]
    texts = {}
    for part in ("train", "test"):
        x = run.unscale(run.features[f"x_{part}"])
        texts[part] = [" ".join(vocab[j] for j in np.flatnonzero(row > 0.3)) + (" she her" if row[0] > 0 else " he")
                       for row in x]
    return AttackData(None, {}, texts, {}, {}, texts["train"], run.unscale(run.features["x_train"]))


def test_the_embedding_attacks_read_the_runs_staged_test_vectors(tmp_path):
    from fedicd.attack_runs.battery_embedding import battery_attribute, battery_embedding_inversion

    run = _run(tmp_path)
    data = _attack_data(run)
    bow, = battery_embedding_inversion(run, quick=True, data=data)
    assert bow.attack == "bow_inversion" and bow.metrics["word_f1"]["n"] == 20
    assert bow.settings["embedding_noise"] == 0.0 and bow.settings["victims_attacked"] == 20
    attr, = battery_attribute(run, quick=True, data=data, n_labelled=20)
    assert attr.metrics["female_auc"]["value"] > 0.9  # "she" marks the sign of coordinate 0: linearly readable
    run.plan.config["privacy"]["embedding_noise"] = 0.3  # a noised run: the adversary noises its own vectors alike
    noised, = battery_embedding_inversion(run, quick=True, data=data)
    assert noised.settings["embedding_noise"] == 0.3 and noised.settings["adversary"].startswith("adaptive")
    data.texts["test"] = data.texts["test"][:5]
    with pytest.raises(ValueError, match="the run's test split holds 20 notes but its config's test split 5"):
        battery_embedding_inversion(run, quick=True, data=data)


def test_an_attribute_the_notes_cannot_show_is_a_config_error(tmp_path):
    from fedicd.attack_runs.battery_embedding import battery_attribute

    run = _run(tmp_path)
    data = _attack_data(run)
    with pytest.raises(ConfigError, match="attribute 'site': .*needs a site column"):
        battery_attribute(run, data=data, attribute="site")
