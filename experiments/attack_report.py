"""Attack fedicd's own embeddings: bag-of-words inversion, retrieval, attribute inference (CIs included).

    python experiments/attack_report.py --out runs/attacks [--corpus synthetic codiesp]

Embeddings are the raw all-MiniLM-L6-v2 vectors fedicd computes (cached), what
a leaked vector store or an intercepted client upload would hold.

* synthetic (``synthetic_fed.toml``, 3,000 MIMIC-shaped notes with planted fake
  identifiers): victims = the test split; the adversary's public auxiliary text =
  the training split (other patients from the same distribution, with their
  codes as the adversary's few labelled notes).
* codiesp (English): victims = the official test cases; auxiliary text = the
  2,751 uncoded background cases (bag of words, retrieval distractors); labelled
  notes for attribute inference = the public training cases.

Writes one JSON report per corpus and attack (``attacks.report.AttackReport``)
and prints the tables.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np

from attacks import AdversaryView, AttackReport
from attacks.attribute import auc_with_ci, code_attributes, infer_attribute, text_attributes, topk_accuracy
from attacks.bow import BowConfig, invert_bag_of_words
from attacks.retrieval import hits_at_k, rank_candidates
from attacks.scoring import set_prf, summarize, words
from fedicd.config import load_config
from fedicd.embedding import embed_texts
from fedicd.experiment import prepare_data

CONFIGS = {"synthetic": "experiments/configs/synthetic_fed.toml", "codiesp": "experiments/configs/codiesp_fed.toml"}


def clinical_vocabulary() -> set[str]:
    """Words of ICD-10-CM code descriptions that are not everyday English function words."""
    import simple_icd_10_cm as icd

    stop = set("a an and or of the in on with without to for by due not other unspecified as at from than "
               "into other specified type site part left right".split())
    vocab = {w for code in icd.get_all_codes(with_dots=False) for w in words(icd.get_description(code))}
    return {w for w in vocab if w not in stop and not w.isdigit() and len(w) > 2}


def _embed(texts: list[str], cfg) -> np.ndarray:
    return embed_texts(texts, cfg.embedding, cache_dir=cfg.cache_dir, progress=False).vectors


def bow_report(view: AdversaryView, victims: list[str], clinical: set[str], identifiers=None,
               seed: int = 0) -> AttackReport:
    guesses, inverter = invert_bag_of_words(view, BowConfig(seed=seed))
    truth = [set(words(t)) for t in victims]
    per = {"word_precision": [], "word_recall": [], "word_f1": [], "clinical_f1": []}
    for g, t in zip(guesses, truth):
        p, r, f = set_prf(g, t)
        per["word_precision"].append(p)
        per["word_recall"].append(r)
        per["word_f1"].append(f)
        per["clinical_f1"].append(set_prf(g & clinical, t & clinical)[2])
    if identifiers is not None:
        per.update({"first_name_recovered": [], "last_name_recovered": [], "full_name_recovered": [],
                    "mrn_recovered": []})
        for g, who in zip(guesses, identifiers):
            first, last = who.first_name.lower(), who.last_name.lower()
            per["first_name_recovered"].append(float(first in g))
            per["last_name_recovered"].append(float(last in g))
            per["full_name_recovered"].append(float(first in g and last in g))
            per["mrn_recovered"].append(float(set(words(who.mrn)) <= g))
    # baseline: guess the auxiliary corpus's most frequent words for everyone (same number as the median guess)
    k = int(np.median([len(g) for g in guesses])) or 1
    common = set(inverter.vocab[:k])
    base = {"word_f1": [set_prf(common, t)[2] for t in truth],
            "clinical_f1": [set_prf(common & clinical, t & clinical)[2] for t in truth]}
    examples = [{"victim": i, "guessed_words": sorted(guesses[i])[:30], "true_words_found": sorted(guesses[i] & truth[i])[:30],
                 "true_text_start": victims[i][:200]} for i in range(min(5, len(victims)))]
    return AttackReport("bow_inversion", summarize(per, seed=seed),
                        settings={"vocabulary": len(inverter.vocab), "threshold": float(inverter.threshold),
                                  "aux_texts": len(view.aux_texts), "victims": view.n_targets},
                        examples=examples, baselines=summarize(base, seed=seed))


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
            ranked = rank_candidates(sub, _embed(texts, cfg), k=len(cands))
            hits1.append(float(ranked[0, 0] == 0))
            hits3.append(float(0 in ranked[0, :3]))
            rand1.append(float(rng.integers(len(cands)) == 0))
        return AttackReport("retrieval_inversion", summarize({"name_hit@1": hits1, "name_hit@3": hits3}, seed=seed),
                            settings={"victims": len(pick), "candidates_per_victim": n_decoys + 1,
                                      "guess_set": "victim note with the true or a decoy name"},
                            baselines=summarize({"name_hit@1": rand1}, seed=seed))
    halves = [" ".join(v.split()[: max(1, len(v.split()) // 2)]) for v in victims]
    pool_emb = np.concatenate([aux_emb, _embed(halves, cfg)])
    rep = retrieval_report(view, pool_emb, np.arange(len(aux_emb), len(pool_emb)), seed=seed)
    rep.settings["guess_set"] = "background notes + the first half of each victim note"
    return rep


def attribute_report(view: AdversaryView, aux_codes, victim_codes, n_labelled: int, victims: list[str],
                     aux_sites=None, victim_sites=None, seed: int = 0) -> AttackReport:
    aux_attr = {**code_attributes(aux_codes), **text_attributes(list(view.aux_texts))}
    vic_attr = {**code_attributes(victim_codes), **text_attributes(victims)}
    metrics, base, settings = {}, {}, {"n_labelled": n_labelled}
    if aux_sites is not None:
        probs, classes = infer_attribute(view, aux_sites, n_labelled=n_labelled, seed=seed)
        majority = max(set(aux_sites), key=list(aux_sites).count)
        for k in (1, 2):
            metrics[f"site_top{k}_accuracy"] = summarize({"a": topk_accuracy(victim_sites, probs, classes, k)})["a"]
        base["site_top1_accuracy"] = summarize({"a": [float(s == majority) for s in victim_sites]})["a"]
    for name in aux_attr:
        y_v = vic_attr[name]
        settings[f"{name}_victim_prevalence"] = float(y_v.mean())
        if len(np.unique(y_v)) < 2 or aux_attr[name].sum() < 2:
            settings[f"{name}_skipped"] = "one class only among victims or labelled notes"
            continue
        try:
            probs, classes = infer_attribute(view, aux_attr[name], n_labelled=n_labelled, seed=seed)
        except ValueError as exc:
            settings[f"{name}_skipped"] = str(exc)
            continue
        metrics[f"{name}_auc"] = auc_with_ci(y_v, probs[:, classes.index(1)], seed=seed)
        base[f"{name}_auc"] = {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": int(len(y_v))}
    return AttackReport("attribute_inference", metrics, settings=settings, baselines=base)


def run_corpus(corpus: str, out: Path, clinical: set[str]) -> list[AttackReport]:
    cfg = load_config(CONFIGS[corpus])
    data = prepare_data(cfg)
    notes = data.notes
    victims_idx = data.parts["test"]
    victims = [notes.texts[i] for i in victims_idx]
    victim_codes = [notes.codes[i] for i in victims_idx]
    identifiers = None
    if corpus == "synthetic":
        from fedicd.data.sources import synthetic_corpus

        by_id = {p.note_id: p for p in synthetic_corpus(cfg.data, cfg.seed).identifiers}
        identifiers = [by_id[notes.ids[i]] for i in victims_idx]
        aux_idx = data.parts["train"]
        aux_texts = [notes.texts[i] for i in aux_idx]
        labelled_texts, labelled_codes = aux_texts, [notes.codes[i] for i in aux_idx]
    else:
        from fedicd.data.codiesp import load_codiesp_background

        _, aux_texts = load_codiesp_background(cfg.data.path, language="en")
        aux_texts = [t for t in aux_texts if t.strip()]
        train_idx = data.parts["train"]
        labelled_texts, labelled_codes = [notes.texts[i] for i in train_idx], [notes.codes[i] for i in train_idx]
    target = _embed(victims, cfg)
    aux_emb = _embed(aux_texts, cfg)
    view = AdversaryView(target_embeddings=target, aux_texts=aux_texts, aux_embeddings=aux_emb)
    reports = [bow_report(view, victims, clinical, identifiers)]
    reports.append(_retrieval(corpus, view, victims, identifiers, aux_emb, cfg))
    labelled_view = AdversaryView(target_embeddings=target, aux_texts=labelled_texts,
                                  aux_embeddings=_embed(labelled_texts, cfg))
    sites = notes.sites if corpus == "synthetic" else None
    aux_sites = [sites[i] for i in data.parts["train"]] if sites is not None else None
    victim_sites = [sites[i] for i in victims_idx] if sites is not None else None
    reports.append(attribute_report(labelled_view, labelled_codes, victim_codes, min(200, len(labelled_texts)),
                                    victims, aux_sites, victim_sites))
    for rep in reports:
        rep.settings["corpus"] = corpus
        rep.save(out / corpus / f"{rep.attack}.json")
    return reports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/attacks"))
    ap.add_argument("--corpus", nargs="+", default=["synthetic", "codiesp"], choices=sorted(CONFIGS))
    args = ap.parse_args()
    clinical = clinical_vocabulary()
    for corpus in args.corpus:
        t0 = time.perf_counter()
        reports = run_corpus(corpus, args.out, clinical)
        print(f"\n=== {corpus} ({time.perf_counter() - t0:.0f} s) ===")
        for rep in reports:
            print(rep.table(), "\n")


if __name__ == "__main__":
    main()
