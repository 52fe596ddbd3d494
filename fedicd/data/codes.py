"""ICD code formatting and validation.

MIMIC-IV stores codes without the decimal point (``4280``, ``I5022``); the
CodiEsp files store them lower case with the point (``r50.9``). fedicd keeps one
canonical form: upper case, with the decimal point where the coding system puts
one. Procedure codes keep their system's form (ICD-9 procedures ``39.61``,
ICD-10-PCS ``0DTJ4ZZ`` without a point).

Label kinds: ``"icd10"`` and ``"icd9"`` labels are validated and put in that
canonical form (:class:`CodeNormaliser` counts every code it rewrote, for the
load summary); ``"free"`` labels (a severity, a specialty) are kept as
written, stripped, and carry ``icd_version`` :data:`FREE_LABEL_VERSION` (0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from fedicd.errors import ConfigError

__all__ = ["CodeKind", "format_code", "is_valid_code", "CODE_PATTERNS", "LABEL_KINDS", "FREE_LABEL_VERSION",
           "resolve_label_kind", "CodeNormaliser"]

CodeKind = Literal["diagnosis", "procedure"]
LABEL_KINDS = ("icd10", "icd9", "free")
FREE_LABEL_VERSION = 0  # the ``icd_version`` of a note whose labels are not ICD codes
_MAX_EXAMPLES = 20

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


def resolve_label_kind(label_kind: str | None, icd_version: int | None, *, prefix: str = "") -> tuple[str, int]:
    """The label kind and per-note ``icd_version`` that ``label_kind``/``icd_version`` ask for.

    Either may be None (unset): ``label_kind`` follows ``icd_version``
    (``9`` → ``"icd9"``, otherwise ``"icd10"``), and ``icd_version`` follows
    ``label_kind`` (``"free"`` → :data:`FREE_LABEL_VERSION`). Both set and
    contradicting (``"icd9"`` with 10, ``"free"`` with any version) raises
    :class:`ConfigError`; ``prefix`` (``"data."``) goes before the key names.
    """
    if label_kind is not None and label_kind not in LABEL_KINDS:
        raise ConfigError(f"{prefix}label_kind must be one of {list(LABEL_KINDS)}, got {label_kind!r}")
    if icd_version is not None and (isinstance(icd_version, bool) or icd_version not in (9, 10)):
        raise ConfigError(f"{prefix}icd_version must be 9 or 10, got {icd_version!r}")
    if label_kind is None:
        return ("icd9", 9) if icd_version == 9 else ("icd10", 10)
    implied = {"icd10": 10, "icd9": 9, "free": FREE_LABEL_VERSION}[label_kind]
    if icd_version is not None and icd_version != implied:
        allowed = "leave it unset" if label_kind == "free" else f"set it to {implied} or leave it unset"
        raise ConfigError(f"{prefix}label_kind = {label_kind!r} contradicts {prefix}icd_version = {icd_version} "
                          f"({prefix}icd_version is only a back-compatible way to say 'icd9'/'icd10'; {allowed})")
    return label_kind, implied


@dataclass
class CodeNormaliser:
    """Canonical form of codes, counting every code whose written form it changed.

    ``count`` counts occurrences (one per row/note where a code was rewritten),
    ``distinct`` the distinct written forms, ``examples`` the first
    ``20`` ``raw -> canonical`` pairs; only rewrites that give a valid code
    are counted (a malformed code is the loader's error). :meth:`report` writes them into a load
    summary's ``info`` as ``codes_normalised``, ``codes_normalised_distinct``
    and ``codes_normalised_examples`` so no rewrite goes unreported.
    Whitespace around a code is stripped without being counted.
    """

    version: int
    kind: CodeKind = "diagnosis"
    count: int = 0
    examples: dict[str, str] = field(default_factory=dict)
    _seen: set = field(default_factory=set, repr=False)

    def __call__(self, raw: Any, occurrences: int = 1) -> str:
        """``raw`` in canonical form (not validated; see :func:`is_valid_code`)."""
        written = str(raw).strip()
        canon = format_code(written, self.version, self.kind)
        if canon != written and is_valid_code(canon, self.version, self.kind):
            self.count += int(occurrences)
            if written not in self._seen:
                self._seen.add(written)
                if len(self.examples) < _MAX_EXAMPLES:
                    self.examples[written] = canon
        return canon

    @property
    def distinct(self) -> int:
        return len(self._seen)

    def report(self, info: dict) -> None:
        """Add this normaliser's counts to ``info`` (summing with counts already there)."""
        info["codes_normalised"] = int(info.get("codes_normalised", 0)) + self.count
        info["codes_normalised_distinct"] = int(info.get("codes_normalised_distinct", 0)) + self.distinct
        examples = dict(info.get("codes_normalised_examples", {}))
        for raw, canon in self.examples.items():
            if len(examples) < _MAX_EXAMPLES:
                examples.setdefault(raw, canon)
        info["codes_normalised_examples"] = examples
