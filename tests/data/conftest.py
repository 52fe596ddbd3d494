"""Tiny MIMIC-IV(-Note) and user-table fixtures, written into tmp folders at test time.

The MIMIC tables use the real column names and order of MIMIC-IV-Note v2.2
(``note/discharge.csv.gz``) and MIMIC-IV v2.2/3.x (``hosp/diagnoses_icd.csv.gz``,
``hosp/procedures_icd.csv.gz``); codes are stored without the decimal point as
in the real files. All subjects, admissions and texts are invented.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

NOTE_COLUMNS = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
DIAGNOSES_COLUMNS = ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]
PROCEDURES_COLUMNS = ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"]

# note_id, subject_id, hadm_id (None = missing), text
_NOTES = [
    ("10000032-DS-21", 10000032, 22595853, "Name: ___\nChief Complaint: dyspnea, \"CHF\"\nfell at home."),
    ("10000032-DS-22", 10000032, 22841357, "Admitted with acute on chronic systolic heart failure.\nDM2."),
    ("10000084-DS-17", 10000084, 23052089, "AKI and hip fracture; CHF exacerbation, lap cholecystectomy."),
    ("10000117-DS-5", 10000117, 27988844, "Observation stay, no billed codes."),
    ("10000117-DS-6", 10000117, 25000000, "   \n  "),
    ("10000200-DS-1", 10000200, None, "Note whose admission id is missing."),
    ("10000300-DS-7", 10000300, 26000000, "Hypertension and heart failure, ICD-9 era."),
    ("10000400-DS-3", 10000400, 27000000, "Community acquired pneumonia."),
]

# subject_id, hadm_id, seq_num, icd_code, icd_version; rows deliberately not in seq_num order
_DIAGNOSES = [
    (10000032, 22595853, 2, "E8497", 9),
    (10000032, 22595853, 1, "4280", 9),
    (10000032, 22595853, 3, "V1582", 9),
    (10000032, 22595853, 4, "4280", 9),      # repeated code: kept once
    (10000032, 22841357, 2, "I5022", 10),
    (10000032, 22841357, 1, "E119", 10),
    (10000084, 23052089, 1, "N179", 10),
    (10000084, 23052089, 2, "I5022", 10),
    (10000084, 23052089, 3, "S72001A", 10),
    (10000117, 25000000, 1, "4019", 9),     # admission of the empty-text note
    (10000300, 26000000, 2, "4280", 9),
    (10000300, 26000000, 1, "4019", 9),
    (10000400, 27000000, 1, "J189", 10),
]

_PROCEDURES = [
    (10000032, 22595853, 1, "2180-05-07", "3961", 9),
    (10000084, 23052089, 1, "2160-11-21", "0DTJ4ZZ", 10),
]


def _note_frame() -> pd.DataFrame:
    rows = [{"note_id": nid, "subject_id": sid, "hadm_id": hadm, "note_type": "DS",
             "note_seq": int(nid.rsplit("-", 1)[1]), "charttime": "2180-05-07 00:00:00",
             "storetime": "2180-05-09 15:26:00", "text": text} for nid, sid, hadm, text in _NOTES]
    frame = pd.DataFrame(rows, columns=NOTE_COLUMNS)
    frame["hadm_id"] = frame["hadm_id"].astype("Int64")
    return frame


@pytest.fixture
def mimic_tables() -> dict[str, pd.DataFrame]:
    """Fresh copies of the three tables, for tests that break one of them."""
    return {"discharge": _note_frame(),
            "diagnoses": pd.DataFrame(_DIAGNOSES, columns=DIAGNOSES_COLUMNS),
            "procedures": pd.DataFrame(_PROCEDURES, columns=PROCEDURES_COLUMNS)}


def write_mimic_tables(root: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """Write ``tables`` as ``root/note/discharge.csv.gz`` and ``root/hosp/*_icd.csv.gz``."""
    targets = {"discharge": "note/discharge.csv.gz", "diagnoses": "hosp/diagnoses_icd.csv.gz",
               "procedures": "hosp/procedures_icd.csv.gz"}
    for name, frame in tables.items():
        path = root / targets[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False, compression="gzip")
    return root


@pytest.fixture
def write_mimic(tmp_path: Path) -> Callable[[dict[str, pd.DataFrame]], Path]:
    """``write_mimic(tables) -> root`` in a fresh tmp folder."""
    return lambda tables: write_mimic_tables(tmp_path / "mimic", tables)


@pytest.fixture
def mimic_root(write_mimic, mimic_tables) -> Path:
    return write_mimic(mimic_tables)


@pytest.fixture(scope="module")
def shared_mimic_root(tmp_path_factory) -> Path:
    """One unmodified MIMIC root per module (for hypothesis tests)."""
    tables = {"discharge": _note_frame(), "diagnoses": pd.DataFrame(_DIAGNOSES, columns=DIAGNOSES_COLUMNS),
              "procedures": pd.DataFrame(_PROCEDURES, columns=PROCEDURES_COLUMNS)}
    return write_mimic_tables(tmp_path_factory.mktemp("mimic"), tables)


# ------------------------------------------------------------ user tables
PARROT_RECORDS = [
    {"id": "p1", "text": "Left MCA stroke, carotid stenosis.", "codes": "I63.4, I65.23", "country": "FR",
     "split": "train"},
    {"id": "p2", "text": "Cerebral infarction, unspecified.", "codes": "i639", "country": "DE", "split": "valid"},
    {"id": "p3", "text": "  ", "codes": "I10", "country": "DE", "split": "test"},
    {"id": "p4", "text": "No diagnosis recorded.", "codes": "", "country": "FR", "split": "dev"},
    {"id": "p5", "text": "Stroke again; same codes twice.", "codes": "I63.4,I63.4 , I10,", "country": "IT",
     "split": "test"},
]


def write_table(path: Path, records: list[dict]) -> Path:
    """Write ``records`` in the format named by ``path``'s suffix (csv/tsv/jsonl, optionally .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if ".jsonl" in name:
        lines = "".join(json.dumps(r) + "\n" for r in records)
        if name.endswith(".gz"):
            with gzip.open(path, "wt", encoding="utf-8") as fh:
                fh.write(lines)
        else:
            path.write_text(lines, encoding="utf-8")
        return path
    sep = "\t" if ".tsv" in name else ","
    pd.DataFrame(records).to_csv(path, sep=sep, index=False, compression="infer")
    return path


@pytest.fixture
def table_writer(tmp_path: Path) -> Callable[[str, list[dict]], Path]:
    """``table_writer(filename, records) -> path`` in a fresh tmp folder."""
    return lambda filename, records: write_table(tmp_path / filename, records)


@pytest.fixture
def parrot_records() -> list[dict]:
    return [dict(r) for r in PARROT_RECORDS]
