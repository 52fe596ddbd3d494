"""Tests of the synthetic corpus generator (fedicd.data.synthetic)."""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np
import pytest
import simple_icd_10_cm as cm
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.data.codes import format_code, is_valid_code
from fedicd.data.synthetic import (
    PlantedIdentifiers,
    SyntheticConfig,
    SyntheticCorpus,
    generate_synthetic,
)
from fedicd.errors import ConfigError

N_NOTES = 3000


@pytest.fixture(scope="module")
def corpus() -> SyntheticCorpus:
    return generate_synthetic(n_notes=N_NOTES, seed=11)


def _js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return (_kl(p, m) + _kl(q, m)) / 2


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / b), 0.0)))


def _histogram(codes: list[tuple[str, ...]], vocab: list[str]) -> np.ndarray:
    counts = Counter(c for cs in codes for c in cs)
    return np.array([counts[c] for c in vocab], dtype=float) + 1e-9


# ---------------------------------------------------------------- determinism
def test_same_seed_same_corpus_whatever_the_global_rng_state():
    np.random.seed(1)
    random.seed(1)
    a = generate_synthetic(n_notes=200, seed=5)
    np.random.seed(999)
    random.seed(999)
    np.random.random(1000)
    b = generate_synthetic(SyntheticConfig(n_notes=200, seed=5))
    assert a.notes.texts == b.notes.texts
    assert a.notes.codes == b.notes.codes
    assert a.notes.sites == b.notes.sites
    assert a.identifiers == b.identifiers
    assert a.negated_codes == b.negated_codes


def test_different_seeds_differ():
    a = generate_synthetic(n_notes=100, seed=1)
    b = generate_synthetic(n_notes=100, seed=2)
    assert sum(x != y for x, y in zip(a.notes.texts, b.notes.texts)) > 90
    assert a.notes.codes != b.notes.codes


# ---------------------------------------------------------------- shape
def test_corpus_shape(corpus):
    notes = corpus.notes
    assert len(notes) == N_NOTES == len(corpus.identifiers)
    assert notes.ids[0] == "syn-000001" and all(re.fullmatch(r"syn-\d{6}", i) for i in notes.ids)
    assert set(notes.icd_version) == {10}
    assert notes.splits is None
    assert set(notes.sites) == {f"site-{k}" for k in range(5)}
    assert notes.summary.source == "synthetic(seed=11)"
    assert "SYNTHETIC" in str(notes.summary.info["kind"])
    assert all(1 <= len(cs) <= 8 and len(set(cs)) == len(cs) for cs in notes.codes)
    assert 3.5 <= np.mean([len(cs) for cs in notes.codes]) <= 5.5


def test_word_counts_fit_the_demo_budget(corpus):
    words = np.array([len(t.split()) for t in corpus.notes.texts])
    assert 150 <= words.mean() <= 300
    assert np.percentile(words, 5) >= 100 and words.max() <= 450


def test_sections_present(corpus):
    text = corpus.notes.texts[0]
    for pattern in (r"(?i)chief complaint|CC:|reason for admission", r"(?i)history",
                    r"(?i)hospital course|course in hospital", r"(?i)diagnos", r"(?i)medications|meds"):
        assert re.search(pattern, text)


# ---------------------------------------------------------------- codes
def test_every_code_is_a_valid_canonical_icd10cm_leaf(corpus):
    for code in corpus.notes.code_counts():
        assert cm.is_valid_item(code) and cm.is_leaf(code), code
        assert is_valid_code(code, 10) and format_code(code, 10) == code
        assert code == code.upper() and (len(code) == 3 or code[3] == ".")


def test_code_frequencies_are_long_tailed(corpus):
    counts = np.array(sorted(corpus.notes.code_counts().values(), reverse=True))
    top = max(1, len(counts) // 10)
    assert counts[:top].sum() / counts.sum() > 0.40


def _has(codes: tuple[str, ...], category: str) -> bool:
    return any(c.startswith(category) for c in codes)


def test_cluster_mates_co_occur():
    notes = generate_synthetic(n_notes=3000, n_sites=1, seed=4).notes
    with_e11 = [_has(cs, "I10") for cs in notes.codes if _has(cs, "E11")]
    without = [_has(cs, "I10") for cs in notes.codes if not _has(cs, "E11")]
    assert len(with_e11) > 30
    assert np.mean(with_e11) > 1.5 * np.mean(without)


def test_sites_have_different_case_mix(corpus):
    vocab = sorted(corpus.notes.code_counts())
    codes, sites = corpus.notes.codes, np.array(corpus.notes.sites)
    per_site = [_histogram([codes[i] for i in np.flatnonzero(sites == s)], vocab)
                for s in sorted(set(sites))]
    between = np.mean([_js_divergence(p, q) for i, p in enumerate(per_site) for q in per_site[i + 1:]])
    perm = np.random.default_rng(0).permutation(len(codes))
    half = len(codes) // 2
    halves = _js_divergence(_histogram([codes[i] for i in perm[:half]], vocab),
                            _histogram([codes[i] for i in perm[half:]], vocab))
    assert between > 3 * halves


def test_sites_write_differently(corpus):
    headings = {}
    for text, site in zip(corpus.notes.texts, corpus.notes.sites):
        headings.setdefault(site, text.split("\n\n")[1].split("\n")[0])
    assert len(set(headings.values())) >= 2


# ---------------------------------------------------------------- mentions
def test_negated_mentions_exist_and_are_not_assigned(corpus):
    with_negation = 0
    for text, codes, negated in zip(corpus.notes.texts, corpus.notes.codes, corpus.negated_codes):
        assert not set(negated) & set(codes)
        assert not {c[:3] for c in negated} & {c[:3] for c in codes}
        for code in negated:
            assert cm.get_description(code).lower() in text.lower()
        with_negation += bool(negated)
    assert with_negation > 0.5 * len(corpus.notes)


def test_indirect_codes_are_named_without_their_description(corpus):
    hidden = total = 0
    for text, codes, indirect in zip(corpus.notes.texts, corpus.notes.codes, corpus.indirect_codes):
        assert set(indirect) <= set(codes)
        for code in indirect:
            total += 1
            hidden += cm.get_description(code).lower() not in text.lower()
        for code in set(codes) - set(indirect):
            assert cm.get_description(code).lower() in text.lower()
    assert total > 0.1 * sum(map(len, corpus.notes.codes))
    assert hidden > 0.85 * total


# ---------------------------------------------------------------- identifiers
def test_planted_identifiers_occur_in_their_note(corpus):
    for text, ident in zip(corpus.notes.texts, corpus.identifiers):
        assert isinstance(ident, PlantedIdentifiers)
        for value in (ident.first_name, ident.last_name, ident.mrn, ident.date_of_birth,
                      ident.admission_date, ident.discharge_date):
            assert value in text
        body = text.split("\n\n", 1)[1]
        assert ident.last_name in body


def test_identifiers_vary(corpus):
    names = {(p.first_name, p.last_name) for p in corpus.identifiers}
    assert len(names) > 200
    assert len({p.mrn for p in corpus.identifiers}) == N_NOTES
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.date_of_birth) for p in corpus.identifiers)
    assert all(p.admission_date <= p.discharge_date for p in corpus.identifiers)


# ---------------------------------------------------------------- disk
def test_save_load_round_trip(tmp_path):
    original = generate_synthetic(n_notes=50, seed=3)
    original.save(tmp_path / "syn")
    assert (tmp_path / "syn" / "notes.jsonl.gz").exists()
    assert (tmp_path / "syn" / "identifiers.jsonl").exists()
    loaded = SyntheticCorpus.load(tmp_path / "syn")
    for column in ("ids", "texts", "codes", "icd_version", "sites", "splits"):
        assert getattr(loaded.notes, column) == getattr(original.notes, column)
    assert loaded.notes.summary.to_dict() == original.notes.summary.to_dict()
    assert loaded.identifiers == original.identifiers
    assert loaded.negated_codes == original.negated_codes
    assert loaded.indirect_codes == original.indirect_codes


def test_load_missing_directory_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="notes"):
        SyntheticCorpus.load(tmp_path / "nowhere")


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("name, value", [
    ("n_notes", 0), ("n_notes", 2.5), ("n_sites", 0), ("n_codes", 5), ("seed", -1),
    ("seed", True), ("zipf_exponent", 0.0), ("mean_codes", 0.5), ("mean_codes", 9.0),
    ("max_codes", 0), ("cluster_cohesion", 1.5), ("indirect_rate", -0.1),
    ("mean_negations", float("nan")), ("site_concentration", -1.0), ("n_sites", "5"),
])
def test_invalid_config_names_the_parameter(name, value):
    with pytest.raises(ConfigError, match=name) as info:
        SyntheticConfig(**{name: value})
    assert isinstance(info.value, ValueError)
    assert "allowed" in str(info.value)


def test_unknown_override_is_rejected():
    with pytest.raises(ConfigError, match="n_note"):
        generate_synthetic(n_note=10)


@settings(max_examples=20, deadline=None)
@given(n_notes=st.integers(1, 40), n_sites=st.integers(1, 7), n_codes=st.integers(10, 80),
       seed=st.integers(0, 2**32), max_codes=st.integers(1, 8),
       indirect_rate=st.floats(0, 1), mean_negations=st.floats(0, 4))
def test_any_valid_config_gives_a_consistent_corpus(n_notes, n_sites, n_codes, seed, max_codes,
                                                    indirect_rate, mean_negations):
    corpus = generate_synthetic(n_notes=n_notes, n_sites=n_sites, n_codes=n_codes, seed=seed,
                                max_codes=max_codes, mean_codes=min(4.5, max_codes),
                                indirect_rate=indirect_rate, mean_negations=mean_negations)
    notes = corpus.notes
    assert len(notes) == n_notes == len(set(notes.ids))
    assert set(notes.sites) <= {f"site-{k}" for k in range(n_sites)}
    assert len(notes.code_counts()) <= n_codes
    assert all(1 <= len(cs) <= max_codes for cs in notes.codes)
    assert [p.note_id for p in corpus.identifiers] == notes.ids
