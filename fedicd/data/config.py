"""``[data]`` config section: where the notes come from, which codes become labels, how they are split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from fedicd.data.codes import resolve_label_kind
from fedicd.errors import ConfigError

__all__ = ["DataConfig", "SOURCES", "SPLITS"]

SOURCES = ("synthetic", "codiesp", "mimic", "tabular", "notes")
SPLITS = ("official", "stratified", "kfold")


@dataclass(frozen=True)
class DataConfig:
    """Where the notes come from, which codes become labels, and how they are split.

    Source options apply to their source only: ``path`` (all but synthetic),
    ``language``/``codes`` (codiesp), ``hosp_path``/``icd_version``/
    ``include_procedures``/``split_file``/``split_id_column``/``split_match_on``
    (mimic; the split file's split column is ``split_column``, default
    ``"split"``), the ``*_column`` options (tabular), ``n_notes``/``n_sites``/
    ``n_codes`` (synthetic).

    Labels: ``label_kind`` is ``"icd10"`` (default), ``"icd9"`` or ``"free"``.
    ICD codes are validated and put in canonical form (rewrites are counted in
    the load summary); ``"free"`` labels (a severity, a specialty; tabular and
    saved-notes sources only) are kept as written, and roll-up
    (``granularity`` other than ``"full"``) is refused for them.
    ``icd_version`` (9 or 10) is the older way to say ``"icd9"``/``"icd10"``:
    left unset it follows ``label_kind``, set alone it decides it, set with a
    contradicting ``label_kind`` it is refused. Both are resolved here, so the
    saved config names the label kind (``icd_version`` None for free labels).

    Label rules: ``min_per_client × n_clients`` is the paper's rule, applied to
    the whole corpus before splitting as in the paper (0 disables it);
    ``min_train_count`` keeps codes with at least that many *training* notes
    (the binarizer is fitted on training notes only).

    Splits: ``"official"`` uses the source's split column, training on
    ``train_parts``; when ``"val"`` is among them, or the source has no val
    notes, a stratified ``val_fraction`` of the training notes is held out for
    the threshold choice. ``"stratified"`` draws ``fractions`` by iterative
    stratification. ``"kfold"`` cuts the notes into ``n_folds`` (default 5,
    >= 2) iteratively stratified folds: the test set is fold ``fold`` (default
    0, in 0..n_folds-1) and val a stratified ``val_fraction`` of the rest; run
    the folds with ``--set data.fold=k``. ``n_folds``/``fold`` apply to
    ``"kfold"`` only.
    """

    source: str = "synthetic"
    """Where the notes come from: "synthetic" (the embedded default), "codiesp", "mimic",
    "tabular" (CSV/JSONL) or "notes" (a saved notes.jsonl.gz)."""
    path: str | None = None
    """The source's file or folder (required for every source but synthetic)."""
    language: str = "en"
    """CodiEsp only: "en" (the English translations) or "es" (the Spanish originals)."""
    codes: str = "diagnosis"
    """CodiEsp only: which codes become labels, "diagnosis", "procedure" or "both"."""
    hosp_path: str | None = None
    """MIMIC only: the folder holding hosp/diagnoses_icd.csv.gz when it is not data.path."""
    icd_version: int | None = None
    """Older spelling of label_kind: 9 or 10; left unset it follows label_kind, a contradiction is refused."""
    label_kind: str | None = None
    """The label kind: "icd10" (default), "icd9" or "free" (labels kept as written; tabular and saved-notes sources
    only)."""
    include_procedures: bool = False
    """MIMIC only: add procedures_icd codes to the diagnoses."""
    split_file: str | None = None
    """MIMIC only: a CSV or Feather file of published train/val/test splits (for data.split = "official")."""
    split_id_column: str = "note_id"
    """MIMIC only: the split file's column holding the note (or admission) id."""
    split_match_on: str = "note_id"
    """MIMIC only: what the split file's ids are, "note_id" or "hadm_id"."""
    text_column: str = "text"
    """Tabular only: the column holding the note text."""
    codes_column: str = "codes"
    """Tabular only: the column holding the codes."""
    codes_delimiter: str = ","
    """Tabular only: the separator between codes in codes_column."""
    id_column: str | None = None
    """Tabular only: the column holding a note id (default: the row number)."""
    site_column: str | None = None
    """Tabular only: the column naming the note's hospital (for the natural partition)."""
    split_column: str | None = None
    """Tabular and MIMIC split files: the column holding "train"/"val"/"test" (default "split")."""
    n_notes: int = 1500
    """Synthetic only: how many notes to generate."""
    n_sites: int = 5
    """Synthetic only: how many hospitals the notes come from."""
    n_codes: int = 300
    """Synthetic only: how many ICD-10 codes the generator draws from."""
    granularity: str = "full"
    """Label granularity: "full" codes, "category" (ICD-10 three characters) or "chapter"."""
    min_per_client: int = 0
    """The paper's label rule: keep codes with at least min_per_client × n_clients notes in the
    whole corpus (0 disables it)."""
    n_clients: int = 20
    """The client count that min_per_client multiplies."""
    min_train_count: int = 1
    """Keep codes with at least this many training notes."""
    split: str = "stratified"
    """The split: "official" (the source's split column), "stratified" (iterative stratification by fractions) or
    "kfold"."""
    train_parts: tuple[str, ...] = ("train",)
    """With split = "official": the parts trained on, "train" and optionally "val" (never "test")."""
    val_fraction: float = 0.15
    """The stratified share of training notes held out for the threshold choice when the source
    has no val notes, in (0, 1)."""
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    """With split = "stratified": the (train, val, test) shares, each in (0, 1), summing to 1."""
    n_folds: int | None = None
    """With split = "kfold": the number of iteratively stratified folds (default 5, >= 2)."""
    fold: int | None = None
    """With split = "kfold": the fold used as the test set (default 0, in 0..n_folds-1)."""

    def __post_init__(self) -> None:
        _choice("data.source", self.source, SOURCES)
        _choice("data.split", self.split, SPLITS)
        _choice("data.granularity", self.granularity, ("full", "category", "chapter"))
        _check_labels(self)
        if self.source != "synthetic" and not self.path:
            raise ConfigError(f"data.path is required for data.source = {self.source!r}")
        if self.min_per_client < 0 or self.n_clients < 1 or self.min_train_count < 1:
            raise ConfigError("data.min_per_client must be >= 0, data.n_clients >= 1 and data.min_train_count >= 1; "
                              f"got {self.min_per_client}, {self.n_clients}, {self.min_train_count}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        bad_parts = set(self.train_parts) - {"train", "val", "test"}
        if bad_parts or "test" in self.train_parts or "train" not in self.train_parts:
            raise ConfigError(f"data.train_parts must contain 'train', may add 'val', never 'test'; got {self.train_parts}")
        object.__setattr__(self, "train_parts", tuple(self.train_parts))
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        if not all(0 < f < 1 for f in self.fractions) or not abs(sum(self.fractions) - 1.0) <= 1e-9:
            raise ConfigError(f"data.fractions must be three numbers in (0, 1) (train, val, test) summing to 1, "
                              f"got {list(self.fractions)}")
        _check_folds(self)


def _check_folds(cfg: DataConfig) -> None:
    """``n_folds``/``fold`` only with ``split = "kfold"``, where they default to 5 and 0."""
    if cfg.split != "kfold":
        if cfg.n_folds is not None or cfg.fold is not None:
            raise ConfigError(f"data.n_folds / data.fold apply to data.split = 'kfold' only; got data.split = "
                              f"{cfg.split!r} with n_folds={cfg.n_folds!r}, fold={cfg.fold!r}")
        return
    n_folds = 5 if cfg.n_folds is None else cfg.n_folds
    fold = 0 if cfg.fold is None else cfg.fold
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ConfigError(f"data.n_folds must be an integer >= 2, got {n_folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n_folds:
        raise ConfigError(f"data.fold must be an integer in 0..{n_folds - 1} (data.n_folds = {n_folds}), got {fold!r}")
    object.__setattr__(cfg, "n_folds", n_folds)
    object.__setattr__(cfg, "fold", fold)


_ICD10_ONLY = {"synthetic": "synthetic notes are", "codiesp": "CodiEsp is"}


def _check_labels(cfg: DataConfig) -> None:
    """Resolve ``label_kind``/``icd_version`` (see the class docstring) and refuse what a source cannot give."""
    kind, version = resolve_label_kind(cfg.label_kind, cfg.icd_version, prefix="data.")
    object.__setattr__(cfg, "label_kind", kind)
    object.__setattr__(cfg, "icd_version", None if kind == "free" else version)
    if kind == "free" and cfg.source not in ("tabular", "notes"):
        raise ConfigError(f"data.label_kind = 'free' applies to data.source 'tabular' or 'notes'; "
                          f"data.source = {cfg.source!r} is ICD-coded (use 'icd10' or 'icd9')")
    if kind == "icd9" and cfg.source in _ICD10_ONLY:
        raise ConfigError(f"data.label_kind = 'icd9' (or data.icd_version = 9) does not fit data.source = "
                          f"{cfg.source!r}: {_ICD10_ONLY[cfg.source]} coded in ICD-10")
    if kind == "free" and cfg.granularity != "full":
        raise ConfigError(f"data.granularity = {cfg.granularity!r} rolls ICD codes up to categories/chapters; "
                          "with data.label_kind = 'free' only 'full' is allowed")


def _choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")
