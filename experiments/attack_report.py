"""Attack fedicd's own embeddings: bag-of-words, generative and retrieval inversion, attribute inference.

    python experiments/attack_report.py --out runs/attacks [--corpus synthetic codiesp] [--skip generative]

Embeddings are the raw all-MiniLM-L6-v2 vectors fedicd computes (cached), what
a leaked vector store or an intercepted client upload would hold.

* synthetic (``synthetic_fed.toml``, 3,000 MIMIC-shaped notes with planted fake
  identifiers): victims = the test split; the adversary's public auxiliary text =
  the training split (other patients from the same distribution, with their
  codes as the adversary's few labelled notes).
* codiesp (English): victims = the official test cases; auxiliary text = the
  2,751 uncoded background cases (bag of words, retrieval distractors); labelled
  notes for attribute inference = the public training cases.

Generative inversion attacks the vectors of the victims' 32-token prefixes (the
public encoder's tokens; vec2text's MIMIC setting), with a decoder trained from
scratch on auxiliary spans of at most 32 tokens (every note's prefix plus
windows every 32 tokens, up to ``--gen-spans``).

Writes one JSON report per corpus and attack (``attacks.report.AttackReport``)
and prints the tables.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from pathlib import Path

import numpy as np

from attacks import AdversaryView, AttackReport
from attacks.retrieval import hits_at_k, rank_candidates
from attacks.scoring import summarize
from fedicd.attack_runs.data import AttackData, clinical_vocabulary, embed, load_attack_data
from fedicd.attack_runs.reports import attribute_report, bow_report, generative_report
from fedicd.config import load_config

CONFIGS = {"synthetic": "experiments/configs/synthetic_fed.toml", "codiesp": "experiments/configs/codiesp_fed.toml"}


def retrieval_report(view: AdversaryView, pool_emb: np.ndarray, truth_idx: np.ndarray, seed: int = 0) -> AttackReport:
    ranked = rank_candidates(view, pool_emb, k=10)
    rng = np.random.default_rng(seed)
    random_ranked = np.stack([rng.permutation(len(pool_emb))[:10] for _ in range(view.n_targets)])
    per = {f"hit@{k}": hits_at_k(ranked, truth_idx, k) for k in (1, 10)}
    base = {f"hit@{k}": hits_at_k(random_ranked, truth_idx, k) for k in (1, 10)}
    return AttackReport("retrieval_inversion", summarize(per, seed=seed), settings={"pool": len(pool_emb)},
                        baselines=summarize(base, seed=seed))


def _swap_name(text: str, true: tuple[str, str], new: tuple[str, str]) -> str:
    for old, rep in zip(true, new):
        text = re.sub(rf"\b{re.escape(old)}\b", rep, text)
    return text


def _retrieval(corpus: str, view: AdversaryView, victims: list[str], identifiers, aux_emb: np.ndarray, cfg,
               n_victims: int = 100, n_decoys: int = 9, seed: int = 0) -> AttackReport:
    """Synthetic: which of 10 names is in the note? (each victim's note re-written with the true name and 9
    decoy names from other victims, re-embedded, ranked). CodiEsp: find the victim among the background
    notes plus the first half of every victim's text (the adversary's partial guess of the note)."""
    rng = np.random.default_rng(seed)
    if corpus == "synthetic":
        pick = rng.choice(len(victims), size=min(n_victims, len(victims)), replace=False)
        names = sorted({(w.first_name, w.last_name) for w in identifiers})
        hits1, hits3, rand1 = [], [], []
        for i in pick:
            true = (identifiers[i].first_name, identifiers[i].last_name)
            decoys = [names[j] for j in rng.permutation(len(names)) if names[j] != true][:n_decoys]
            cands = [true, *decoys]
            texts = [_swap_name(victims[i], true, cand) for cand in cands]
            sub = AdversaryView(target_embeddings=view.target_embeddings[i:i + 1], aux_texts=(),
                                aux_embeddings=np.zeros((0, view.target_embeddings.shape[1])))
            ranked = rank_candidates(sub, embed(texts, cfg), k=len(cands))
            hits1.append(float(ranked[0, 0] == 0))
            hits3.append(float(0 in ranked[0, :3]))
            rand1.append(float(rng.integers(len(cands)) == 0))
        return AttackReport("retrieval_inversion", summarize({"name_hit@1": hits1, "name_hit@3": hits3}, seed=seed),
                            settings={"victims": len(pick), "candidates_per_victim": n_decoys + 1,
                                      "guess_set": "victim note with the true or a decoy name"},
                            baselines=summarize({"name_hit@1": rand1}, seed=seed))
    halves = [" ".join(v.split()[: max(1, len(v.split()) // 2)]) for v in victims]
    pool_emb = np.concatenate([aux_emb, embed(halves, cfg)])
    rep = retrieval_report(view, pool_emb, np.arange(len(aux_emb), len(pool_emb)), seed=seed)
    rep.settings["guess_set"] = "background notes + the first half of each victim note"
    return rep


def run_corpus(corpus: str, out: Path, clinical: set[str], skip: tuple[str, ...] = (),
               gen_spans: int = 8000) -> list[AttackReport]:
    cfg = load_config(CONFIGS[corpus])
    d: AttackData = load_attack_data(cfg)
    victims, target = d.texts["test"], d.vectors["test"]
    view = AdversaryView(target_embeddings=target, aux_texts=d.aux_texts, aux_embeddings=d.aux_vectors)
    reports = [] if "bow" in skip else [bow_report(view, victims, clinical, d.identifiers)]
    if "generative" not in skip:
        t0 = time.perf_counter()
        reports.append(generative_report(victims, d.aux_texts, cfg, d.identifiers, max_spans=gen_spans))
        print(f"generative inversion: {time.perf_counter() - t0:.0f} s", flush=True)
    if "retrieval" not in skip:
        reports.append(_retrieval(corpus, view, victims, d.identifiers, d.aux_vectors, cfg))
    if "attribute" not in skip:
        labelled_view = AdversaryView(target_embeddings=target, aux_texts=d.texts["train"],
                                      aux_embeddings=d.vectors["train"])
        sites = d.sites if corpus == "synthetic" else None
        reports.append(attribute_report(labelled_view, d.codes["train"], d.codes["test"],
                                        min(200, len(d.texts["train"])), victims,
                                        sites["train"] if sites else None, sites["test"] if sites else None))
    for rep in reports:
        rep.settings["corpus"] = corpus
        rep.save(out / corpus / f"{rep.attack}.json")
    return reports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/attacks"))
    ap.add_argument("--corpus", nargs="+", default=["synthetic", "codiesp"], choices=sorted(CONFIGS))
    ap.add_argument("--skip", nargs="*", default=[], choices=["bow", "generative", "retrieval", "attribute"])
    ap.add_argument("--gen-spans", type=int, default=8000, help="auxiliary spans the decoder trains on")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("attacks").setLevel(logging.INFO)
    clinical = clinical_vocabulary()
    for corpus in args.corpus:
        t0 = time.perf_counter()
        reports = run_corpus(corpus, args.out, clinical, tuple(args.skip), args.gen_spans)
        print(f"\n=== {corpus} ({time.perf_counter() - t0:.0f} s) ===")
        for rep in reports:
            print(rep.table(), "\n")


if __name__ == "__main__":
    main()
