"""ICD code formatting and validation.

MIMIC-IV stores codes without the decimal point (``4280``, ``I5022``); the
CodiEsp files store them lower case with the point (``r50.9``). fedicd keeps one
canonical form: upper case, with the decimal point where the coding system puts
one. Procedure codes keep their system's form (ICD-9 procedures ``39.61``,
ICD-10-PCS ``0DTJ4ZZ`` without a point).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["CodeKind", "format_code", "is_valid_code", "CODE_PATTERNS"]

CodeKind = Literal["diagnosis", "procedure"]

CODE_PATTERNS: dict[tuple[int, str], re.Pattern[str]] = {
    (10, "diagnosis"): re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$"),
    (9, "diagnosis"): re.compile(r"^(V[0-9]{2}(\.[0-9]{1,2})?|E[0-9]{3}(\.[0-9])?|[0-9]{3}(\.[0-9]{1,2})?)$"),
    # full ICD-10-PCS codes have 7 characters; CodiEsp also codes 4-character
    # prefixes (e.g. ``BN20``) when the text does not specify the rest.
    (10, "procedure"): re.compile(r"^[0-9A-HJ-NP-Z]{4}([0-9A-HJ-NP-Z]{3})?$"),
    (9, "procedure"): re.compile(r"^[0-9]{2}(\.[0-9]{1,2})?$"),
}


def _check_system(version: int, kind: str) -> None:
    if (version, kind) not in CODE_PATTERNS:
        raise ValueError(f"unknown coding system: icd_version={version!r}, kind={kind!r}; "
                         "allowed versions 9 or 10, kinds 'diagnosis' or 'procedure'")


def format_code(raw: str, version: int, kind: CodeKind = "diagnosis") -> str:
    """Return ``raw`` in fedicd's canonical form (upper case, decimal point placed).

    Codes that already carry a point are only upper-cased and stripped.
    The point goes after 3 characters for ICD-10-CM and ICD-9-CM diagnoses
    (after 4 for ICD-9 ``E`` codes), after 2 for ICD-9 procedures, nowhere for
    ICD-10-PCS. The result is not validated; see :func:`is_valid_code`.
    """
    _check_system(version, kind)
    code = str(raw).strip().upper()
    if "." in code or (version, kind) == (10, "procedure"):
        return code
    if kind == "procedure":
        cut = 2
    elif version == 9 and code.startswith("E"):
        cut = 4
    else:
        cut = 3
    return code if len(code) <= cut else f"{code[:cut]}.{code[cut:]}"


def is_valid_code(code: str, version: int, kind: CodeKind = "diagnosis") -> bool:
    """True when ``code`` (canonical form) matches the shape of its coding system."""
    _check_system(version, kind)
    return bool(CODE_PATTERNS[(version, kind)].match(code))
