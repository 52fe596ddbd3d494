"""CodiEsp (CLEF eHealth 2020) in its official Zenodo layout.

Layout (``root`` = the folder holding ``train/ dev/ test/ background/``)::

    {split}/text_files/<case>.txt       Spanish original
    {split}/text_files_en/<case>.txt    English machine translation
    {split}/{split}D.tsv                case <TAB> ICD-10-CM code (lower case)
    {split}/{split}P.tsv                case <TAB> ICD-10-PCS code

Codes are normalised to upper case (counted in the load summary's
``codes_normalised``, with examples in ``codes_normalised_examples``). The official split maps ``dev`` to
fedicd's ``val``. Reference figures for the gold standard v4: 1,000 coded
cases, 2,557 distinct diagnosis codes.

Miranda-Escalada et al., CLEF 2020 Working Notes; CC BY 4.0.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Literal

from fedicd.data.codes import CodeNormaliser, is_valid_code
from fedicd.data.notes import CodedNotes, LoadSummary, check_kept, unique_codes
from fedicd.errors import DataFormatError

__all__ = ["load_codiesp", "load_codiesp_background", "CODIESP_SPLITS"]

log = logging.getLogger(__name__)

CODIESP_SPLITS = {"train": "train", "dev": "val", "test": "test"}
_TEXT_DIRS = {"en": "text_files_en", "es": "text_files"}
_CODE_FILES = {"diagnosis": ("D",), "procedure": ("P",), "both": ("D", "P")}
_KINDS = {"D": "diagnosis", "P": "procedure"}


def _check_choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


def _read_codes(path: Path, normaliser: CodeNormaliser) -> dict[str, list[str]]:
    """Case id → codes (file order), validated and normalised; errors name the file and row."""
    if not path.exists():
        raise FileNotFoundError(f"CodiEsp code file not found: {path}")
    out: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row_no, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise DataFormatError(f"expected 'case<TAB>code', got {row!r}", source=str(path), row=row_no)
            code, kind = normaliser(row[1]), normaliser.kind
            if not is_valid_code(code, 10, kind):
                raise DataFormatError(f"malformed ICD-10 {kind} code {row[1]!r}", source=str(path), row=row_no)
            out.setdefault(row[0].strip(), []).append(code)
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"not valid UTF-8: {exc}", source=str(path)) from exc


def _split_dir(root: Path, split: str) -> Path:
    d = root / split
    if not d.is_dir():
        raise FileNotFoundError(f"CodiEsp split folder not found: {d} (expected the official layout "
                                f"with train/, dev/, test/ under {root})")
    return d


def load_codiesp(root: str | Path, *, language: Literal["en", "es"] = "en",
                 codes: Literal["diagnosis", "procedure", "both"] = "diagnosis") -> CodedNotes:
    """Load the 1,000 coded CodiEsp cases with the official split.

    Parameters
    ----------
    root:
        Folder with the official ``train/``, ``dev/``, ``test/`` sub-folders.
    language:
        ``"en"`` (machine translation) or ``"es"`` (original).
    codes:
        Which gold codes become labels.

    Cases with a text file but no code of the requested kind are dropped and
    counted (``no_codes``); a case coded but without a text file is an error.
    """
    _check_choice("language", language, _TEXT_DIRS)
    _check_choice("codes", codes, _CODE_FILES)
    root = Path(root)
    summary = LoadSummary(source=f"codiesp({root}, language={language}, codes={codes})")
    ids, texts, code_col, splits = [], [], [], []
    normalisers = {suffix: CodeNormaliser(10, _KINDS[suffix]) for suffix in _CODE_FILES[codes]}
    for split, fed_split in CODIESP_SPLITS.items():
        d = _split_dir(root, split)
        case_codes: dict[str, list[str]] = {}
        for suffix in _CODE_FILES[codes]:
            for case, cs in _read_codes(d / f"{split}{suffix}.tsv", normalisers[suffix]).items():
                case_codes.setdefault(case, []).extend(cs)
        text_dir = d / _TEXT_DIRS[language]
        files = sorted(text_dir.glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"no .txt files in {text_dir}")
        on_disk = {f.stem for f in files}
        missing = sorted(set(case_codes) - on_disk)
        if missing:
            raise DataFormatError(f"{len(missing)} coded cases have no text file, e.g. {missing[:3]}",
                                  source=str(text_dir))
        summary.rows_read += len(files)
        for f in files:
            if f.stem not in case_codes:
                summary.drop("no_codes")
                continue
            text = _read_text(f)
            if not text.strip():
                raise DataFormatError("empty clinical case text", source=str(f))
            ids.append(f.stem)
            texts.append(text)
            code_col.append(unique_codes(case_codes[f.stem]))
            splits.append(fed_split)
    for normaliser in normalisers.values():
        normaliser.report(summary.info)
    check_kept(len(ids), summary, what="cases")
    log.info("loaded CodiEsp: %d cases", len(ids))
    return CodedNotes(ids=ids, texts=texts, codes=code_col, icd_version=[10] * len(ids),
                      splits=splits, summary=summary)


def load_codiesp_background(root: str | Path, *, language: Literal["en", "es"] = "en") -> tuple[list[str], list[str]]:
    """The 2,751 uncoded background cases as ``(ids, texts)`` (public auxiliary text for attacks)."""
    _check_choice("language", language, _TEXT_DIRS)
    text_dir = Path(root) / "background" / _TEXT_DIRS[language]
    if not text_dir.is_dir():
        raise FileNotFoundError(f"CodiEsp background folder not found: {text_dir}")
    files = sorted(text_dir.glob("*.txt"))
    return [f.stem for f in files], [_read_text(f) for f in files]
