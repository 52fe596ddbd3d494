"""Deterministic user corpora written as CSV files, for loader- and CLI-level tests.

* :func:`write_small_site_corpus`: 40 coded notes from 13 hospital sites of 1–10
  notes each; multi-line report texts with commas and quotes, comma-separated
  dotted ICD-10 codes, column names with spaces, and two attribute columns
  (one with empty values).
* :func:`write_free_label_corpus`: 500 rows, 15 distinct report texts, each
  always with the same severity label (``mild``/``moderate``/``severe``): labels
  that are not ICD codes (``data.label_kind = "free"``).

Both functions take a file path, or a folder (written to the default file
name inside it), write the same bytes on every call, and return the file path.
Texts and codes are invented.
"""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["SITE_CORPUS", "FREE_CORPUS", "SITE_SIZES", "SEVERITIES", "write_small_site_corpus",
           "write_free_label_corpus"]

# the [data] keys that load each corpus (plus path = the written file)
SITE_CORPUS = {"source": "tabular", "text_column": "Report Text", "codes_column": "ICD-10 codes",
               "site_column": "Hospital site"}
FREE_CORPUS = {"source": "tabular", "text_column": "Report Text", "codes_column": "Severity",
               "label_kind": "free"}

SITE_SIZES = (10, 1, 2, 3, 4, 5, 1, 2, 3, 4, 2, 1, 2)  # 13 sites, 40 notes
SEVERITIES = ("mild", "moderate", "severe")

_FINDINGS = [
    ("I10", "Essential hypertension"), ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("J18.9", "Pneumonia, unspecified organism"), ("I50.9", "Heart failure, unspecified"),
    ("N18.3", "Chronic kidney disease, stage 3"), ("I63.4", "Cerebral infarction due to embolism"),
    ("K80.20", "Calculus of gallbladder without obstruction"), ("F32.9", "Major depressive disorder"),
]


def _target(path: str | Path, default_name: str) -> Path:
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _site_note(i: int) -> tuple[str, str]:
    """Text and codes of note ``i``: 1–3 findings chosen by a fixed rule."""
    picks = [_FINDINGS[i % 8]] + ([_FINDINGS[(3 * i + 1) % 8]] if i % 3 else []) + (
        [_FINDINGS[(5 * i + 2) % 8]] if i % 4 == 0 else [])
    picks = list(dict.fromkeys(picks))
    lines = [f"Report {i + 1}: patient seen on ward {i % 5}, \"stable\" on arrival."]
    lines += [f"Finding: {name.lower()}, noted on day {d + 1}." for d, (_, name) in enumerate(picks)]
    lines.append("Plan: follow-up in clinic, review medication.")
    return "\n".join(lines), ", ".join(code for code, _ in picks)


def write_small_site_corpus(path: str | Path) -> Path:
    """Write the 40-note, 13-site corpus (columns ``Report Text``, ``ICD-10 codes``, ``Hospital site``,
    ``Patient sex``, ``Age group``) to ``path`` (or ``path/small_site_corpus.csv``)."""
    rows, i = [], 0
    for s, size in enumerate(SITE_SIZES):
        for _ in range(size):
            text, codes = _site_note(i)
            sex = ("F", "M", "")[i % 3]  # every third note has no recorded sex
            rows.append([text, codes, f"Hospital {chr(ord('A') + s)}", sex, f"{40 + 10 * (i % 4)}-{49 + 10 * (i % 4)}"])
            i += 1
    header = ["Report Text", "ICD-10 codes", "Hospital site", "Patient sex", "Age group"]
    return _write(_target(path, "small_site_corpus.csv"), header, rows)


def write_free_label_corpus(path: str | Path) -> Path:
    """Write the 500-row severity corpus (columns ``Report Text``, ``Severity``, ``Ward``) to ``path``
    (or ``path/free_label_corpus.csv``); text ``k`` (of 15) always has severity ``SEVERITIES[k % 3]``."""
    texts = [f"Triage note {k + 1}: {('cough', 'chest pain', 'fall', 'fever', 'headache')[k % 5]} "
             f"for {k + 2} days,\nvitals {('normal', 'borderline', 'abnormal')[k % 3]}." for k in range(15)]
    rows = [[texts[r % 15], SEVERITIES[(r % 15) % 3], f"Ward {r % 4}"] for r in range(500)]
    return _write(_target(path, "free_label_corpus.csv"), ["Report Text", "Severity", "Ward"], rows)
