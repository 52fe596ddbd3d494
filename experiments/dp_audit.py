"""One-run DP audit of fedicd's DP claims: ε̂ (white-box, black-box, canary clients) beside the accounted ε.

Stages two small synthetic federated runs (600 notes, 30 codes, 5 clients, 3 rounds, batch 32; one with
sample-level DP-SGD under local SGD, one with client-level DP), then, for each claimed ε in {1, 3, 8}, re-plans
σ for that ε (fedicd's own calibration) and runs :func:`fedicd.attack_runs.audit.battery_audit`, plus the
broken mechanisms (noise off; σ/10) that still claim the same ε.

    python experiments/dp_audit.py --out experiments/results/dp_audit [--quick] [--runs runs/dp_audit]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

SMALL = ["--set", 'cache_dir="runs/results/cache"', "--set", "data.n_notes=600", "--set", "data.n_codes=30", "--set", "data.min_train_count=5",
         "--set", "embedding.max_tokens=128", "--set", 'train.mode="federated"', "--set", "partition.n_clients=5",
         "--set", "partition.min_partition_size=5", "--set", "federated.rounds=3", "--set",
         "train.batch_size=32", "--set", 'federated.engine="inprocess"']
DP = {"sample": ["--set", 'privacy.dp="sample"', "--set", "privacy.target_epsilon=8.0", "--set",
                 'federated.local_optimizer="sgd"'],
      "client": ["--set", 'privacy.dp="client"', "--set", "privacy.target_epsilon=8.0"]}


def stage(runs: Path, dp: str) -> Path:
    run_dir = runs / dp
    if not (run_dir / "results.json").exists():
        cmd = [str(Path(sys.executable).parent / "fedicd"), "run", "fedicd/resources/demo.toml", *SMALL, *DP[dp],
               "--out", str(run_dir), "--overwrite"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return run_dir


def variant(run, eps: float, partition_id: int = 0):
    """The run with its DP plan re-calibrated for a claimed ε (fedicd's own calibration); under sample-level DP
    only the audited client's schedule is re-planned (calibrating σ costs seconds per client)."""
    p, fed = run.plan.privacy, run.plan.federated
    if run.dp == "sample":
        from fedicd.privacy.accounting import plan_dp

        c = p.clients[partition_id]
        mine = plan_dp(c.n, run.plan.train.batch_size, fed.rounds, fed.local_epochs, noise=0.0, target_epsilon=eps,
                       delta=c.delta)
        clients = p.clients[:partition_id] + (mine,) + p.clients[partition_id + 1:]
        privacy = dataclasses.replace(p, clients=clients, target_epsilon=eps)
    else:
        from fedicd.privacy.client_level import calibrate_client_noise

        sigma = calibrate_client_noise(eps, p.delta, fed.rounds, p.sampled_clients, p.population)
        privacy = dataclasses.replace(p, noise_multiplier=sigma, target_epsilon=eps)
    return dataclasses.replace(run, plan=dataclasses.replace(run.plan, privacy=privacy))


def idealized(plan, m: int, seed: int = 0) -> dict:
    """ε̂ of the bare mechanism (Poisson-subsampled Gaussian sums, σ, q, T of ``plan``, no model or data):
    what the one-run audit can prove about this mechanism at all with m canaries."""
    import numpy as np

    from attacks.audit import audit_scores, epsilon_cap, inclusion_coins, step_likelihood_scores
    from fedicd.privacy.accounting import epsilon_of

    inc = inclusion_coins(m, seed)
    rng = np.random.default_rng(seed + 1)
    obs = (rng.random((plan.total_steps, m)) < plan.sample_rate) & inc
    obs = obs + rng.standard_normal(obs.shape) * plan.noise_multiplier
    res = audit_scores(step_likelihood_scores(obs, signal=1.0, noise_std=plan.noise_multiplier,
                                              sample_rate=plan.sample_rate), inc, delta=plan.delta)
    eps = epsilon_of([(plan.noise_multiplier, plan.sample_rate, plan.total_steps)], plan.delta)
    return {"dp": "sample", "claimed_epsilon": plan.target_epsilon, "mechanism": "honest (idealized: no model)",
            "observed": "simulated noised steps of the bare mechanism (white-box)", "canaries": "simulated",
            "accounted_epsilon": eps, "epsilon_lower_bound": res.epsilon_lower_bound,
            "epsilon_ratio": res.epsilon_lower_bound / eps, "m": m, "k_plus": res.k_plus, "k_minus": res.k_minus,
            "correct": res.correct, "guesses": res.guesses,
            "epsilon_cap_for_m": epsilon_cap(m, delta=plan.delta, grid_size=res.grid_size),
            "noise_multiplier_claimed": plan.noise_multiplier, "seconds": 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="fewer canaries, claims 1 and 8 only")
    ap.add_argument("--runs", type=Path, default=Path("runs/dp_audit"), help="where the two staged runs go")
    args = ap.parse_args()
    from fedicd.attack_runs.audit import battery_audit
    from fedicd.attack_runs.federation import load_federation_run

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rows, planned = [], {}
    claims = (1.0, 8.0) if args.quick else (1.0, 3.0, 8.0)
    for dp in ("sample", "client"):
        run = load_federation_run(stage(args.runs, dp))
        for eps in claims:
            claimed = variant(run, eps)
            planned[eps] = claimed.plan.privacy.clients[0] if dp == "sample" else None
            for label, scale in (("honest", 1.0), ("noise off", 0.0), ("sigma/10", 0.1)):
                t = time.time()
                reports = battery_audit(claimed, seed=0, quick=args.quick, noise_scale=scale)
                for r in reports:
                    s = r.settings
                    rows.append({"dp": dp, "claimed_epsilon": eps, "mechanism": label,
                                 "observed": s["observed"], "canaries": s["canaries"],
                                 "accounted_epsilon": s["accounted_epsilon"],
                                 "epsilon_lower_bound": r.metrics["epsilon_lower_bound"]["value"],
                                 "epsilon_ratio": r.metrics["epsilon_ratio"]["value"], "m": s["m"],
                                 "k_plus": s["k_plus"], "k_minus": s["k_minus"], "correct": s["correct"],
                                 "guesses": s["guesses"], "epsilon_cap_for_m": s["epsilon_cap_for_m"],
                                 "noise_multiplier_claimed": s["noise_multiplier"],
                                 "seconds": round(time.time() - t, 1)})
                    print(f"{dp:6} ε={eps:g} {label:9} {s['observed'][:38]:38} ε̂={rows[-1]['epsilon_lower_bound']:.3f}"
                          f" (accounted {s['accounted_epsilon']:.3f}, {s['correct']}/{s['guesses']} of m={s['m']})",
                          flush=True)
        if dp == "sample":  # the same mechanism without a model: the one-run method's own limit here
            for eps in claims:
                rows.append(idealized(planned[eps], 2000 if args.quick else 20000))
                print(f"ideal  ε={eps:g} {rows[-1]['observed'][:48]} ε̂={rows[-1]['epsilon_lower_bound']:.3f}")
    (args.out / "dp_audit.json").write_text(json.dumps({"argv": sys.argv, "seconds": round(time.time() - t0, 1),
                                                        "rows": rows}, indent=1))
    cols = ["dp", "claimed_epsilon", "mechanism", "observed", "accounted_epsilon", "epsilon_lower_bound",
            "epsilon_ratio", "m", "correct", "guesses", "epsilon_cap_for_m"]
    lines = [",".join(cols)] + [",".join(f'"{r[c]}"' if isinstance(r[c], str) else f"{r[c]:.4g}"
                                         if isinstance(r[c], float) else str(r[c]) for c in cols) for r in rows]
    (args.out / "dp_audit.csv").write_text("\n".join(lines) + "\n")
    print(f"done in {time.time() - t0:.0f} s: {args.out}/dp_audit.json, dp_audit.csv")


if __name__ == "__main__":
    main()
