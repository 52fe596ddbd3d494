"""Non-IID degree of fedicd's partitioners over alpha, on the synthetic corpus and on CodiEsp.

    python experiments/partition_noniid.py --out runs/partition_noniid

For alpha in {0.05, 0.1, 0.5, 1, 10, 1e4} and each Dirichlet scheme, prints the
mean Jensen-Shannon divergence to the global label distribution and the mean
fraction of codes a client never sees (mean over --seeds seeds), beside IID
and (synthetic) the natural site partition. Writes one heat map PNG per
(corpus, scheme, alpha) for the first seed and a JSON of all numbers.
Synthetic: 20,000 notes, 20 clients, codes with >= 10 notes. CodiEsp: the
training notes of experiments/configs/codiesp_central.toml, 5 clients.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fedicd.config import load_config
from fedicd.data.labels import filter_rare_codes
from fedicd.data.synthetic import generate_synthetic
from fedicd.prepare import prepare_data
from fedicd.partition import dirichlet_partition, iid_partition, natural_partition, partition_stats
from fedicd.plots import plot_heatmap

ALPHAS = (0.05, 0.1, 0.5, 1.0, 10.0, 1e4)
SCHEMES = ("product", "mixture", "primary")


def corpora(codiesp_config: Path) -> dict[str, tuple[list, list | None, int]]:
    notes = filter_rare_codes(generate_synthetic(n_notes=20_000, seed=0).notes, min_count=10)
    out = {"synthetic": (notes.codes, notes.sites, 20)}
    if codiesp_config.exists():
        cfg = load_config(codiesp_config)
        try:
            data = prepare_data(cfg)
        except FileNotFoundError as exc:
            print(f"CodiEsp skipped: {exc}")
            return out
        keep = set(data.binarizer.classes_)
        codes = [tuple(c for c in data.notes.codes[i] if c in keep) for i in data.parts["train"]]
        out["codiesp"] = (codes, None, 5)
    return out


def degree(stats_list) -> dict[str, float]:
    return {"mean_jsd": float(np.mean([s.mean_jsd for s in stats_list])),
            "mean_absent_fraction": float(np.mean([s.mean_absent_fraction for s in stats_list]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/partition_noniid"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--codiesp-config", type=Path, default=Path("experiments/configs/codiesp_central.toml"))
    args = ap.parse_args()
    results: dict = {}
    for corpus, (codes, sites, k) in corpora(args.codiesp_config).items():
        rows = results[corpus] = {"n_notes": len(codes), "n_clients": k}
        rows["iid"] = degree([partition_stats(codes, iid_partition(codes, k, seed=s)) for s in range(args.seeds)])
        if sites is not None:
            rows["natural"] = degree([partition_stats(codes, natural_partition(codes, sites=sites))])
        for scheme in SCHEMES:
            for alpha in ALPHAS:
                stats = [partition_stats(codes, dirichlet_partition(codes, k, alpha=alpha, seed=s, scheme=scheme,
                                                                     min_partition_size=0, unlabelled="uniform"))
                         for s in range(args.seeds)]
                rows[f"{scheme} alpha={alpha:g}"] = degree(stats)
                plot_heatmap(stats[0], args.out / f"{corpus}_{scheme}_alpha{alpha:g}.png",
                             title=f"{corpus}, {scheme}, alpha={alpha:g}, {k} clients")
        print(f"\n{corpus}: {len(codes)} notes, {k} clients (mean of {args.seeds} seeds)")
        print(f"{'partition':<24}{'mean JSD':>10}{'absent':>10}")
        for name, row in rows.items():
            if isinstance(row, dict):
                print(f"{name:<24}{row['mean_jsd']:>10.4f}{row['mean_absent_fraction']:>10.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "noniid.json").write_text(json.dumps(results, indent=2))
    print(f"\nheat maps and noniid.json in {args.out}")


if __name__ == "__main__":
    main()
