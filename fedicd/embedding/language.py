"""A light check that texts are in the language an English encoder was trained on.

An English encoder (the default all-MiniLM-L6-v2) turns Spanish or German notes
into vectors without complaint, and the head then learns from much weaker
features. This check reads an evenly spaced sample of the texts and, per text
of at least ``_MIN_WORDS`` words, two shares of its words:

- ``english``: common English function words (``the``, ``of``, ``with``...).
  English prose, clinical notes included, scores about 0.12-0.45; Spanish
  (CodiEsp) scores below 0.02.
- ``foreign``: common function words of Spanish, Portuguese, French, Italian,
  German or Dutch (``de``, ``que``, ``und``...) and words in a non-Latin script.
  Spanish scores about 0.3; English below 0.02.

A text looks non-English when ``english`` < :data:`ENGLISH_SHARE_MIN` and
``foreign`` >= :data:`FOREIGN_SHARE_MIN` (a list of vitals or lab values, low on
both, is not judged foreign). When at least :data:`NON_ENGLISH_FRACTION_MAX` of
the judged texts look non-English, one WARNING is logged.

Privacy
-------
Reads raw note text; only counts leave this module (no words are logged).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from fedicd.embedding.models import MULTILINGUAL, UNKNOWN_LANGUAGE

__all__ = ["ENGLISH_SHARE_MIN", "FOREIGN_SHARE_MIN", "NON_ENGLISH_FRACTION_MAX", "check_language", "word_shares"]

logger = logging.getLogger(__name__)

ENGLISH_SHARE_MIN = 0.08  # a text below this share of English words...
FOREIGN_SHARE_MIN = 0.08  # ...and at or above this share of other languages' words looks non-English
NON_ENGLISH_FRACTION_MAX = 0.1  # warn when at least this fraction of the judged texts looks non-English
_SAMPLE_TEXTS = 200
_MAX_WORDS = 400  # words read per text
_MIN_WORDS = 20  # shorter texts say too little to judge
_WORD = re.compile(r"[^\W\d_]+")
_LAST_LATIN = 0x024F  # end of Latin Extended-B: letters beyond it are another script
# Frequent English words, leaving out those also frequent in Spanish, Portuguese, French, Italian or
# German ("a", "in", "an", "as", "per", "no"...), plus a few words of English clinical prose.
_ENGLISH_WORDS = frozenset("""
the of and to is was with for on at by from that this are were be been has have had or it its his
her she they their there which who whom what when where while after before than then also but if into over
under between during without within about above below patient patients history showed shows presented
revealed denies denied daily
""".split())
# Frequent function words of es, pt, fr, it, de, nl that are not English words or English clinical shorthand
# (left out: "a", "o", "y" as in "y/o", "in", "an", "et"/"al" as in "et al.", "von"/"de" kept only as "de").
_FOREIGN_WORDS = frozenset("""
de la el que los del las por con una para se su sin como más pero sus fue este esta presenta tras
os da em um não ao dos das com pelo pela foi
le les des est une du au aux dans pour sur avec pas qui été
il di che della dei delle nel nella sono gli alla anche
der und das ist nicht mit ein eine dem zu auf für wurde bei
het een van niet zijn voor werd
""".split())


def word_shares(text: str) -> tuple[float, float, int]:
    """English share, foreign share and the number of words read (the first ``_MAX_WORDS``)."""
    words = [w.lower() for w in _WORD.findall(text)[:_MAX_WORDS]]
    if not words:
        return 0.0, 0.0, 0
    english = sum(w in _ENGLISH_WORDS for w in words)
    foreign = sum(w in _FOREIGN_WORDS or ord(max(w)) > _LAST_LATIN for w in words)
    return english / len(words), foreign / len(words), len(words)


def _sample(texts: Sequence[str]) -> list[str]:
    """Up to ``_SAMPLE_TEXTS`` texts at evenly spaced positions (deterministic)."""
    if len(texts) <= _SAMPLE_TEXTS:
        return list(texts)
    return [texts[int(i)] for i in np.linspace(0, len(texts) - 1, _SAMPLE_TEXTS).round()]


def _measure(texts: Sequence[str]) -> dict[str, object]:
    """Counts and median shares over the judged texts of ``texts`` (empty dict when none is long enough)."""
    shares = [(en, fo) for en, fo, n_words in map(word_shares, texts) if n_words >= _MIN_WORDS]
    if not shares:
        return {}
    english, foreign = np.array(shares).T
    return {"texts_sampled": len(texts), "texts_judged": len(shares),
            "texts_not_english": int(((english < ENGLISH_SHARE_MIN) & (foreign >= FOREIGN_SHARE_MIN)).sum()),
            "median_english_share": round(float(np.median(english)), 4),
            "median_foreign_share": round(float(np.median(foreign)), 4)}


def check_language(texts: Sequence[str], *, model_id: str, language: str, source: str) -> dict[str, object]:
    """Check that ``texts`` look English when the encoder is English; warn once if not.

    Parameters
    ----------
    texts:
        The texts to embed.
    model_id:
        Encoder name, for the message.
    language, source:
        The encoder's language and where it was read, from
        :func:`fedicd.embedding.models.model_language`. Only ``"en"`` and
        ``"unknown"`` (assumed English) are checked.

    Returns
    -------
    dict
        ``model_language``, ``language_source`` and ``status`` (``"ok"``,
        ``"warning"`` or ``"skipped"``); when checked, ``texts_sampled``,
        ``texts_judged`` (with >= 20 words), ``texts_not_english``,
        ``median_english_share`` and ``median_foreign_share``; when skipped, ``reason``.
    """
    info: dict[str, object] = {"model_language": language, "language_source": source}
    if language not in ("en", UNKNOWN_LANGUAGE):
        why = "multilingual encoder" if language == MULTILINGUAL else f"encoder language is {language!r}"
        return info | {"status": "skipped", "reason": why + "; the check detects English text only"}
    measured = _measure(_sample(texts))
    if not measured:
        return info | {"status": "skipped", "reason": f"no sampled text has {_MIN_WORDS} or more words"}
    info |= measured
    if measured["texts_not_english"] < NON_ENGLISH_FRACTION_MAX * measured["texts_judged"]:
        return info | {"status": "ok"}
    assumed = "" if language == "en" else " (language unknown, assumed English)"
    logger.warning(
        "texts look like another language than English, but encoder %s%s was trained on English: %d of %d "
        "sampled texts have an English-word share below %.2f and another language's share of at least %.2f "
        "(median English share %.3f; English notes score about 0.12-0.45). Use a multilingual encoder "
        "(e.g. embedding.model = a multilingual-e5 or Qwen3-Embedding model), or set embedding.model_language "
        "if the encoder does cover this language",
        model_id, assumed, measured["texts_not_english"], measured["texts_judged"], ENGLISH_SHARE_MIN,
        FOREIGN_SHARE_MIN, measured["median_english_share"],
    )
    return info | {"status": "warning"}
