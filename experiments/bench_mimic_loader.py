"""Time and memory of ``fedicd.data.mimic.load_mimic`` on a full-size fake MIMIC-IV.

Writes fake ``note/discharge.csv.gz`` and ``hosp/diagnoses_icd.csv.gz`` in the
real schema into ``--workdir``, then runs ``load_mimic(workdir, icd_version=10,
min_per_client=10, n_clients=20)`` in a fresh subprocess per ``--chunksize`` (so
the peak RSS is the loader's alone) and prints wall time, peak RSS, notes kept,
the drop summary and the characters of kept text.

Sizes: real discharge.csv.gz has 331,794 notes; the average of ~10,500
characters per discharge summary is an ESTIMATE (lengths here are log-normal
around ``--chars``). diagnoses_icd has ~4.75M rows, ~14 codes per admission,
~55% ICD-9 / ~45% ICD-10 admissions. Text is shuffled clinical-ish sentences
(with commas, quotes and newlines, so the CSV needs quoting); codes are valid,
without dots, Zipf-distributed. Noise: a few empty texts, null hadm_ids and
admissions without codes.

Usage::

    python experiments/bench_mimic_loader.py --n-notes 20000          # quick check
    python experiments/bench_mimic_loader.py                          # full size
    python experiments/bench_mimic_loader.py --chunksize 50000 10000 --keep --workdir /tmp/fakemimic
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_SUBJECTS = ("The patient", "Pt", "She", "He", "Patient", "The patient's family")
_VERBS = ("was admitted with", "presented with", "was treated for", "developed", "denies", "reports",
          "was noted to have", "was evaluated for", "has a history of", "was discharged with")
_FINDINGS = ("acute decompensated heart failure", "community-acquired pneumonia", "sepsis, likely urinary source",
             "acute kidney injury on CKD stage 3", "type 2 diabetes mellitus with hyperglycemia",
             "atrial fibrillation with RVR", "COPD exacerbation", "a left hip fracture", "chest pain, ruled out MI",
             "hyponatremia (Na 126)", "upper GI bleed", "altered mental status", "C. diff colitis",
             'a "mechanical" fall at home', "hypertensive urgency", "alcohol withdrawal", "cellulitis of the leg")
_TAILS = ("", " on admission", " during this hospitalization", " per the ED team", ", improved with IV fluids",
          ", resolved", "; home meds were continued", ". Follow up with PCP in 1 week", ", s/p CT abd/pelvis")
_HEADERS = ("\n \nBrief Hospital Course:\n", "\n \nDischarge Medications:\n1. Metoprolol 25 mg PO BID\n",
            "\n \nPhysical Exam:\nVS: T 98.6, BP 132/84, HR 88, RR 18, O2 96% RA\n", "\n \nDischarge Instructions:\n",
            "\n \nPertinent Results:\n___ 06:10AM BLOOD WBC-9.8 RBC-3.91 Hgb-11.2 Hct-34.0\n")
_PREAMBLE = "Name:  ___                     Unit No:   ___\n \nAdmission Date:  ___              Discharge Date:   ___\n"


def _corpus(rng: np.random.Generator, n_chars: int) -> str:
    """A long deterministic string of shuffled sentences and section headers."""
    sentences = [f"{s} {v} {f}{t}. " for s in _SUBJECTS for v in _VERBS for f in _FINDINGS for t in _TAILS]
    pool = np.array(sentences + list(_HEADERS) * 200, dtype=object)
    parts, total = [], 0
    while total < n_chars:
        block = "".join(rng.permutation(pool)[:2000])
        parts.append(block)
        total += len(block)
    return "".join(parts)[:n_chars]


def _code_vocab(rng: np.random.Generator, version: int, n: int) -> list[str]:
    """``n`` distinct valid codes without dots; a few real ones first (the most frequent)."""
    seen = ["I5022", "E119", "I10", "N179", "J189", "E785", "Z7901"] if version == 10 else \
        ["4280", "25000", "4019", "5849", "486", "2724", "V5861", "E8497"]
    out = dict.fromkeys(seen)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTVWXYZ"))
    while len(out) < n:
        if version == 10:
            code = letters[rng.integers(25)] + "".join(map(str, rng.integers(10, size=2 + rng.integers(4))))
        else:
            kind = rng.random()
            digits = "".join(map(str, rng.integers(10, size=5)))
            code = ("V" + digits[:2 + rng.integers(3)] if kind < 0.1 else
                    "E" + digits[:3 + rng.integers(2)] if kind < 0.15 else digits[:3 + rng.integers(3)])
        out[code] = None
    return list(out)


def write_fake(root: Path, n_notes: int, chars: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    (root / "note").mkdir(parents=True, exist_ok=True)
    (root / "hosp").mkdir(parents=True, exist_ok=True)
    n_adm = n_notes + n_notes // 30  # some admissions have codes but no discharge note
    hadm = 20_000_000 + rng.choice(9_999_999, size=n_adm, replace=False)
    subject = 10_000_000 + np.sort(rng.integers(0, max(1, int(n_adm / 2.3)), size=n_adm))
    icd10 = rng.random(n_adm) < 0.45
    n_codes = np.clip(rng.poisson(14, size=n_adm), 1, 39)
    n_codes[rng.random(n_adm) < 0.005] = 0  # admissions without codes
    # diagnoses: Zipf-ish draws from a per-version vocabulary, duplicates within an admission removed
    t0 = time.perf_counter()
    rows = []
    for version, vocab_size in ((9, 9000), (10, 16000)):
        vocab = np.array(_code_vocab(rng, version, vocab_size), dtype=object)
        prob = 1.0 / (np.arange(vocab_size) + 5.0) ** 1.1
        idx = np.flatnonzero(icd10 == (version == 10))
        reps = n_codes[idx]
        draws = rng.choice(vocab_size, size=int(reps.sum()), p=prob / prob.sum())
        rows.append((np.repeat(idx, reps), draws, vocab, version))
    lines = []
    for adm, draws, vocab, version in rows:
        pairs = np.unique(np.stack([adm, draws], axis=1), axis=0)  # sorted by admission, deduplicated
        starts = np.r_[0, np.flatnonzero(np.diff(pairs[:, 0])) + 1]
        seq = np.arange(len(pairs)) - np.repeat(starts, np.diff(np.r_[starts, len(pairs)])) + 1
        lines += [f"{subject[a]},{hadm[a]},{s},{vocab[c]},{version}\n" for (a, c), s in zip(pairs.tolist(), seq)]
    with gzip.open(root / "hosp" / "diagnoses_icd.csv.gz", "wt", compresslevel=1) as fh:
        fh.write("subject_id,hadm_id,seq_num,icd_code,icd_version\n")
        for i in range(0, len(lines), 200_000):
            fh.write("".join(lines[i:i + 200_000]))
    n_diag_rows, t_diag = len(lines), time.perf_counter() - t0
    del lines, rows
    # notes: slices of a shuffled-sentence corpus, log-normal lengths with mean `chars`
    t0 = time.perf_counter()
    sigma = 0.5
    lengths = rng.lognormal(np.log(chars) - sigma ** 2 / 2, sigma, size=n_notes).astype(int)
    lengths = np.clip(lengths, 200, 20 * chars)
    corpus = _corpus(rng, int(lengths.max()) + 2_000_000)
    offsets = rng.integers(0, len(corpus) - lengths - len(_PREAMBLE), size=n_notes)
    empty = set(rng.choice(n_notes, size=max(1, n_notes // 10_000), replace=False).tolist())
    null_hadm = set(rng.choice(n_notes, size=max(1, n_notes // 50_000), replace=False).tolist())
    total_chars = 0
    with gzip.open(root / "note" / "discharge.csv.gz", "wb", compresslevel=1) as fh:
        fh.write(b"note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text\n")
        for lo in range(0, n_notes, 2000):
            block = []
            for i in range(lo, min(lo + 2000, n_notes)):
                text = "" if i in empty else _PREAMBLE + corpus[offsets[i]:offsets[i] + lengths[i]]
                total_chars += len(text)
                day = 1 + i % 28
                block.append(f"{subject[i]}-DS-{1 + i % 40},{subject[i]},{'' if i in null_hadm else hadm[i]},"
                             f"DS,{1 + i % 40},2150-03-{day:02d} 00:00:00,2150-03-{day:02d} 14:{i % 60:02d}:00,"
                             f"\"{text.replace(chr(34), chr(34) * 2)}\"\n")
            fh.write("".join(block).encode())
    return {"n_notes": n_notes, "note_chars": total_chars, "diag_rows": n_diag_rows,
            "t_diag_s": round(t_diag, 1), "t_notes_s": round(time.perf_counter() - t0, 1),
            "note_gz_MB": round((root / "note" / "discharge.csv.gz").stat().st_size / 1e6, 1),
            "diag_gz_MB": round((root / "hosp" / "diagnoses_icd.csv.gz").stat().st_size / 1e6, 1)}


def _peak_rss_mb() -> int:
    """This process's peak RSS in MB: VmHWM (Linux; unlike ru_maxrss it is not inherited from
    the parent across fork+exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) // 1024 for line in fh if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def child(workdir: str, chunksize: int) -> None:
    """Run the loader once and print one JSON line (run in a fresh process)."""
    from fedicd.data.mimic import load_mimic

    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    notes = load_mimic(workdir, icd_version=10, min_per_client=10, n_clients=20, chunksize=chunksize)
    wall = time.perf_counter() - t0
    rss = _peak_rss_mb()
    print(json.dumps({"chunksize": chunksize, "wall_s": round(wall, 1), "rss_after_import_MB": rss0,
                      "peak_rss_MB": rss, "kept": len(notes.ids),
                      "kept_chars_MB": round(sum(map(len, notes.texts)) / 1e6, 1),
                      "kept_str_MB": round(sum(map(sys.getsizeof, notes.texts)) / 1e6, 1),
                      "dropped": notes.summary.dropped,
                      "codes_kept": notes.summary.info.get("codes_kept")}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--n-notes", type=int, default=331_794)
    ap.add_argument("--chars", type=int, default=10_500)
    ap.add_argument("--chunksize", type=int, nargs="+", default=[50_000])
    ap.add_argument("--keep", action="store_true", help="keep the workdir")
    ap.add_argument("--reuse", action="store_true", help="use the files already in --workdir")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(str(args.workdir), args.chunksize[0])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fake_mimic_", dir="/tmp"))
    print("command:", " ".join([Path(sys.executable).name] + sys.argv), flush=True)
    try:
        if not args.reuse:
            t0 = time.perf_counter()
            info = write_fake(workdir, args.n_notes, args.chars)
            print(f"generated in {time.perf_counter() - t0:.1f}s: {info}", flush=True)
        print(f"{'chunksize':>9} {'wall_s':>7} {'peakRSS_MB':>10} {'kept':>7} {'keptChars_MB':>12} "
              f"{'RSS/kept':>8}  dropped")
        for cs in args.chunksize:
            res = subprocess.run([sys.executable, __file__, "--child", "--workdir", str(workdir),
                                  "--chunksize", str(cs)], capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{cs:>9} {r['wall_s']:>7} {r['peak_rss_MB']:>10} {r['kept']:>7} {r['kept_chars_MB']:>12} "
                  f"{r['peak_rss_MB'] * 1.048576 / max(r['kept_chars_MB'], 1e-9):>8.2f}  {r['dropped']}", flush=True)
            print(f"          details: {r}", flush=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
