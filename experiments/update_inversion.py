"""Update inversion chained to text: recovery against batch size, local steps, optimizer, trap weights and defences.

A curious or malicious federated server attacks client 0's update, made by
fedicd's own local training from the final global model of a finished
synthetic federated run; the committed table used the 600-note, 5-client run
that ``docs/update-inversion.md`` gives the command for. Recovered vectors go to the bag-of-words inverter, trained once on
the adversary's public stand-in (notes of other patients: the other clients'
rows, validation and test). Two reference rows frame the chained metrics: the ceiling (the inverters on
client 0's true embeddings) and the baseline (on the mean public embedding, which carries no information).
Under SecAgg+ / CKKS only client 0's samples are scored. Writes ``update_inversion.json`` and
``update_inversion.md`` to ``--out``.

    python experiments/update_inversion.py --run RUN_DIR --out experiments/results/update_inversion [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

METRICS = ("cosine", "recovered", "word_f1", "first_name_recovered", "last_name_recovered", "full_name_recovered")


def grid(args) -> list[tuple[str, dict]]:
    """(row label, RoundSetting fields) of the table."""
    rows = []
    batches = (1, 8) if args.quick else (1, 8, 64)
    for b in batches:
        for mode in ("step", "epoch"):
            for opt in ("sgd", "adamw"):
                for trap in (False, True) if b > 1 else (False,):  # at B=1 a trap only makes every unit fire
                    lr = args.sgd_lr if opt == "sgd" else args.adamw_lr
                    rows.append((f"B={b} {mode} {opt} {'trap' if trap else 'passive'}",
                                 {"batch_size": b, "mode": mode, "optimizer": opt, "lr": lr, "trap": trap}))
    base = {"batch_size": 8, "mode": "step", "optimizer": "sgd", "lr": args.sgd_lr}
    defences = [("none", {}), ("DP-SGD eps=1", {"defence": "dp_sample", "epsilon": 1.0}),
                ("DP-SGD eps=3", {"defence": "dp_sample", "epsilon": 3.0}),
                ("DP-SGD eps=8", {"defence": "dp_sample", "epsilon": 8.0}),
                (f"client-level DP (clip {args.client_clip})", {"defence": "dp_client", "clip": args.client_clip}),
                ("SecAgg+ (average of 5)", {"defence": "secagg_plus"}),
                ("SecAgg+ (average of 5) + trap", {"defence": "secagg_plus", "trap": True}),
                ("CKKS key holder (average of 5)", {"defence": "ckks"}),
                ("CKKS key holder (average of 5) + trap", {"defence": "ckks", "trap": True})]
    defences += [(f"embedding noise sigma={s:g}", {"defence": "embedding_noise", "noise_sigma": s}) for s in args.noise]
    if args.quick:
        defences = [defences[0], defences[3], defences[4], defences[5]]
    rows += [(f"defence: {name}", {**base, **extra}) for name, extra in defences]
    return rows


def cell(m: dict) -> str:
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished federated run folder (see the module docstring)")
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="batch 1 and 8 only, four defences, a small inverter")
    p.add_argument("--sgd-lr", type=float, default=0.1)
    p.add_argument("--adamw-lr", type=float, default=1e-3)
    p.add_argument("--client-clip", type=float, default=0.01)
    p.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.1], help="embedding noise sigmas")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.time()

    from attacks.scoring import identifier_recovery, set_prf, summarize, words
    from attacks.update_inversion import score_views
    from fedicd.attack_runs.federation import load_federation_run
    from fedicd.attack_runs.update_inversion import RoundSetting, build_chain, observe_round, run_material, sample_dp

    run = load_federation_run(args.run)
    material = run_material(run, 0)
    chain = build_chain(material, quick=args.quick, seed=args.seed)
    all_clients = [run.client_rows(c) for c in range(len(run.clients))]
    texts = [[material["train_texts"][i] for i in rows] for rows in run.clients]
    ids = [[material["identifiers"][i] for i in rows] for rows in run.clients]
    scaler = (run.scaler_mean, run.scaler_scale)
    print(f"loaded run, trained the word inverter on {len(chain['aux_texts'])} notes: {time.time() - t0:.0f} s",
          file=sys.stderr)

    results = [ceiling_row(chain, run, texts[0], ids[0], set_prf, words, identifier_recovery, summarize, args),
               baseline_row(chain, texts[0], ids[0], set_prf, words, identifier_recovery, summarize, args)]
    for label, fields in grid(args):
        s = RoundSetting(seed=args.seed, dp_rounds=run.plan.federated.rounds, **fields)
        clients = all_clients if s.defence in ("secagg_plus", "ckks") else all_clients[:1]
        views = observe_round(run.final_state, clients, run.plan.train, s, scaler=scaler, max_rows=64,
                              aux_scaled=run.features["x_val"], secagg={"clipping_range": 8.0})
        per = score_views(views, texts=texts, identifiers=ids, chain=chain)
        results.append({"row": label, "setting": dataclasses.asdict(s), "updates": len(views),
                        "metrics": summarize(per, seed=args.seed)})
        if s.defence == "dp_sample":  # the plan sample_dp calibrated for client 0 (sigma, q, steps)
            results[-1]["dp_plan"] = sample_dp(s, len(all_clients[0][0]))[1].to_dict()
        print(f"{label}: {results[-1]['metrics']['recovered']['value']:.3f} ({time.time() - t0:.0f} s)",
              file=sys.stderr)
    est = RoundSetting(seed=args.seed, batch_size=8, lr=args.sgd_lr)
    views = observe_round(run.final_state, all_clients[:1], run.plan.train, est, scaler=scaler, max_rows=64)
    per = score_views(views, texts=texts, identifiers=ids, chain=chain, scaler_mode="estimated")
    results.append({"row": "B=8 step sgd passive, scaler estimated from public notes",
                    "setting": dataclasses.asdict(est), "updates": len(views), "metrics": summarize(per, seed=args.seed)})
    write(args, run, results, time.time() - t0)
    return 0


def ceiling_row(chain, run, texts, ids, set_prf, words, identifier_recovery, summarize, args) -> dict:
    """The word inverter and name guesser on client 0's true raw vectors: the ceiling of the chained attack."""
    x, _ = run.client_rows(0)
    raw = run.unscale(x)
    guesses = [g | n for g, n in zip(chain["inverter"].predict(raw), chain["names"](raw))]
    per = {"cosine": [1.0] * len(x), "recovered": [1.0] * len(x),
           "word_f1": [set_prf(g, words(t))[2] for g, t in zip(guesses, texts)], **identifier_recovery(guesses, ids)}
    return {"row": "ceiling: true embeddings of client 0", "setting": {}, "updates": 0,
            "metrics": summarize(per, seed=args.seed)}


def baseline_row(chain, texts, ids, set_prf, words, identifier_recovery, summarize, args) -> dict:
    """The chain on a vector that carries nothing about the client: the mean public embedding, for every sample.

    What the word inverter and the name guesser output from no information at all; the chained rows are read
    against it (the recovery metrics do not apply)."""
    raw = chain["aux_raw"].mean(axis=0, keepdims=True)
    guess = chain["inverter"].predict(raw)[0] | chain["names"](raw)[0]
    per = {"word_f1": [set_prf(guess, words(t))[2] for t in texts], **identifier_recovery([guess] * len(texts), ids)}
    return {"row": "baseline: mean public embedding (no information)", "setting": {}, "updates": 0,
            "metrics": summarize(per, seed=args.seed)}


def write(args, run, results: list[dict], seconds: float) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"run": str(args.run), "argv": sys.argv, "seconds": round(seconds, 1), "quick": args.quick,
           "clients": [len(c) for c in run.clients], "head": run.plan.train.head, "rows": results}
    (out / "update_inversion.json").write_text(json.dumps(doc, indent=1))
    head = ("| setting | updates | samples | cosine [95% CI] | fraction cos > 0.99 | word F1 (chained) | "
            "full names | last names |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in results:
        m = r["metrics"]
        n = next(iter(m.values()))["n"]
        names = [f"{round(m[k]['value'] * n)}/{n}" if k in m else "-"
                 for k in ("full_name_recovered", "last_name_recovered")]
        cells = [cell(m[k]) if k in m else "-" for k in ("cosine", "recovered", "word_f1")]
        lines.append(f"| {r['row']} | {r['updates']} | {n} | {' | '.join(cells)} | {names[0]} | {names[1]} |")
    sigmas = {r["row"]: r["dp_plan"] for r in results if "dp_plan" in r}
    if sigmas:
        lines.append("")
        lines += [f"{row}: sigma = {p['noise_multiplier']:.3f}, q = {p['sample_rate']:.4f}, {p['total_steps']} steps, "
                  f"delta = {p['delta']:g}" for row, p in sigmas.items()]
    (out / "update_inversion.md").write_text("\n".join(lines) + f"\n\n{seconds:.0f} s; `{' '.join(sys.argv)}`\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
