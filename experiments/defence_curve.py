"""Leakage vs utility under embedding defences: attack metrics and the ICD micro-F1 that remains.

    python experiments/defence_curve.py --out runs/defences

Synthetic corpus (``synthetic_fed.toml``; ``--config experiments/configs/codiesp_fed.toml``
for CodiEsp, where the adversary's auxiliary notes are likewise the training split): the defender applies a defence to all
its vectors (train, val, test); the ICD head is trained centrally on the defended
training vectors (the paper's MLP, 20 epochs) and scored on the defended test
vectors. The adversary attacks the defended test vectors (the victims) with
bag-of-words inversion and attribute inference (mental health), either
*non-adaptive* (trained on clean auxiliary vectors) or *adaptive* (the defence is
public, so it defends its auxiliary vectors the same way and retrains).
Writes ``defence_curve.json`` and ``defence_curve.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


from attacks import AdversaryView
from attacks.attribute import auc_with_ci, code_attributes, infer_attribute
from attacks.bow import BowConfig, BowInverter
from attacks.scoring import set_prf, summarize, words
from fedicd.config import load_config
from fedicd.embedding import embed_texts
from fedicd.prepare import prepare_data
from fedicd.attack_runs.sweep import icd_utility, make_defence
from fedicd.plots import plot_leakage_utility

SETTINGS = [("none", 0), ("noise", 0.02), ("noise", 0.05), ("noise", 0.1), ("noise", 0.2), ("noise", 0.5),
            ("quantize", 4), ("quantize", 2), ("quantize", 1), ("pca", 64), ("pca", 16), ("pca", 4)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/defences"))
    ap.add_argument("--config", default="experiments/configs/synthetic_fed.toml")
    args = ap.parse_args()
    cfg = load_config(args.config)
    data = prepare_data(cfg)
    vec = embed_texts(data.notes.texts, cfg.embedding, cache_dir=cfg.cache_dir, progress=False).vectors
    parts = {p: vec[i] for p, i in data.parts.items()}
    texts = {p: [data.notes.texts[i] for i in idx] for p, idx in data.parts.items()}
    codes = {p: [data.notes.codes[i] for i in idx] for p, idx in data.parts.items()}
    # the defender's data is train/val/test; the adversary's public auxiliary notes are the training split's
    # texts re-embedded by the adversary (the same public encoder gives the same clean vectors)
    rows = []
    clean_bow = BowInverter(BowConfig()).fit(parts["train"], texts["train"])
    labels_aux = code_attributes(codes["train"])["mental_health"]
    labels_vic = code_attributes(codes["test"])["mental_health"]
    truth = [set(words(t)) for t in texts["test"]]
    for kind, strength in SETTINGS:
        defend = make_defence(kind, strength, parts["train"], seed=cfg.seed)
        d = {p: defend(v) for p, v in parts.items()}
        utility = icd_utility(d, data.labels, cfg.seed)
        adaptive = BowInverter(BowConfig()).fit(d["train"], texts["train"])
        row = {"defence": kind, "strength": strength, "icd_micro_f1": utility}
        for name, inv in (("adaptive", adaptive), ("non_adaptive", clean_bow)):
            if name == "non_adaptive" and d["test"].shape[1] != parts["train"].shape[1]:
                continue  # a clean-vector inverter cannot read reduced vectors
            guesses = inv.predict(d["test"])
            f1 = summarize({"f1": [set_prf(g, t)[2] for g, t in zip(guesses, truth)]})["f1"]
            row[f"bow_word_f1_{name}"] = f1
        view = AdversaryView(target_embeddings=d["test"], aux_texts=texts["train"], aux_embeddings=d["train"])
        probs, classes = infer_attribute(view, labels_aux, n_labelled=200)
        row["mental_health_auc_adaptive"] = auc_with_ci(labels_vic, probs[:, classes.index(1)])
        rows.append(row)
        print(json.dumps({k: (round(v["value"], 4) if isinstance(v, dict) else v) for k, v in row.items()}),
              flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "defence_curve.json").write_text(json.dumps(rows, indent=2))
    plot_leakage_utility([{"defence": r["defence"], "strength": r["strength"], "icd_micro_f1": r["icd_micro_f1"],
                           "metric": "bag-of-words word F1", "leakage": r["bow_word_f1_adaptive"], "baseline": None}
                          for r in rows], args.out / "defence_curve.png")


if __name__ == "__main__":
    main()
