"""Writing synthetic discharge summaries: per-site style and the note renderer.

Helper of :mod:`fedicd.data.synthetic`. A :class:`SiteStyle` fixes one site's
headings, header layout, abbreviations and sentence templates;
:func:`render_note` turns a :class:`NotePlan` (which codes, how each is
mentioned, which codes are negated) and a :class:`Patient` into MIMIC-shaped
text. All randomness comes from a :class:`Dice`, a buffered stream of uniforms
drawn from one seeded :class:`numpy.random.Generator`.

Privacy
-------
The text is SYNTHETIC. Names, record numbers and dates are invented and
planted on purpose so attacks can measure identifier leakage.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedicd.data import synthetic_lexicon as lex
from fedicd.data.synthetic_catalogue import CodePool

__all__ = ["Dice", "NotePlan", "Patient", "SiteStyle", "make_site_style", "mention_phrase",
           "render_note"]


class Dice:
    """Uniform draws from ``rng``, fetched in blocks so per-note sampling stays fast."""

    def __init__(self, rng: np.random.Generator, block: int = 8192):
        self._rng, self._block = rng, block
        self._buf: list[float] = []
        self._pos = 0

    def u(self) -> float:
        """One uniform in [0, 1)."""
        if self._pos >= len(self._buf):
            self._buf, self._pos = self._rng.random(self._block).tolist(), 0
        self._pos += 1
        return self._buf[self._pos - 1]

    def chance(self, p: float) -> bool:
        return self.u() < p

    def index(self, n: int) -> int:
        return min(int(self.u() * n), n - 1)

    def pick(self, seq: Sequence):
        return seq[self.index(len(seq))]

    def weighted(self, cumulative: Sequence[float]) -> int:
        """Index drawn with probabilities given by a cumulative weight list."""
        return min(bisect.bisect_right(cumulative, self.u() * cumulative[-1]), len(cumulative) - 1)


@dataclass(frozen=True)
class SiteStyle:
    """One site's writing habits (indices into :mod:`synthetic_lexicon` lists)."""

    headings: dict[str, str]
    header: str
    age_format: str
    sex_words: tuple[str, str]
    history_lead: str
    finding_leads: tuple[str, ...]
    course_templates: tuple[str, ...]
    negation_templates: tuple[str, ...]
    shorthand_rate: float
    dx_format: int
    spell_out_meds: bool
    use_first_name: bool
    vitals_format: str
    follow_up: str


@dataclass(frozen=True)
class Patient:
    """The planted identity of one note (all invented)."""

    first: str
    last: str
    mrn: str
    dob: str
    admission: str
    discharge: str
    age: int
    female: bool


@dataclass(frozen=True)
class NotePlan:
    """What one note says: its codes (pool indices, primary first) and how."""

    codes: tuple[int, ...]
    mentions: tuple[str, ...]
    indirect: tuple[bool, ...]
    negated: tuple[int, ...]
    in_history: tuple[int, ...]


def make_site_style(rng: np.random.Generator) -> SiteStyle:
    """Draw one site's writing style."""
    def some(options: Sequence[str], k: int) -> tuple[str, ...]:
        return tuple(options[i] for i in sorted(rng.choice(len(options), size=k, replace=False)))

    return SiteStyle(
        headings={key: opts[int(rng.integers(len(opts)))] for key, opts in lex.HEADINGS.items()},
        header=lex.HEADER_FORMATS[int(rng.integers(len(lex.HEADER_FORMATS)))],
        age_format=lex.AGE_FORMATS[int(rng.integers(len(lex.AGE_FORMATS)))],
        sex_words=lex.SEX_WORDS[int(rng.integers(len(lex.SEX_WORDS)))],
        history_lead=lex.HISTORY_LEADS[int(rng.integers(len(lex.HISTORY_LEADS)))],
        finding_leads=some(lex.FINDING_LEADS, 2),
        course_templates=some(lex.COURSE_TEMPLATES, 3),
        negation_templates=some(lex.NEGATION_TEMPLATES, 3),
        shorthand_rate=float(rng.uniform(0.1, 0.9)),
        dx_format=int(rng.integers(3)),
        spell_out_meds=bool(rng.random() < 0.5),
        use_first_name=bool(rng.random() < 0.3),
        vitals_format=lex.VITALS_FORMATS[int(rng.integers(len(lex.VITALS_FORMATS)))],
        follow_up=lex.FOLLOW_UP_LINES[int(rng.integers(len(lex.FOLLOW_UP_LINES)))],
    )


def mention_phrase(pool: CodePool, code: int, indirect: bool, style: SiteStyle, dice: Dice) -> str:
    """The words naming ``code``: its description, or an indirect wording."""
    if not indirect:
        return pool.descriptions[code]
    short = pool.abbreviations[code]
    if short and (not pool.indirect[code] or dice.chance(style.shorthand_rate)):
        return short
    return dice.pick(pool.indirect[code])


def render_note(plan: NotePlan, who: Patient, style: SiteStyle, pool: CodePool, dice: Dice) -> str:
    """Render one discharge summary as text."""
    words = _Words(who, style)
    negations = [words.fill(dice.pick(style.negation_templates), x=_lower(pool.descriptions[c]))
                 for c in plan.negated]
    split = dice.index(len(negations) + 1)
    primary_chapter = pool.chapters[plan.codes[0]]
    complaint = dice.pick(lex.COMPLAINTS[primary_chapter])
    closing = [words.fill(dice.pick(lex.DISCHARGE_LINES)),
               style.follow_up.format(spec=lex.SPECIALTIES[primary_chapter], weeks=2 + dice.index(3))]
    parts = [
        style.header.format(first=who.first, last=who.last, mrn=who.mrn, dob=who.dob,
                            adm=who.admission, dis=who.discharge, sex="F" if who.female else "M",
                            service=lex.SPECIALTIES[primary_chapter].upper()),
        f"{style.headings['cc']}\n{complaint}",
        f"{style.headings['hpi']}\n" + " ".join([_hpi(plan, words, dice, complaint), _vitals(style, dice),
                                                  *negations[:split]]),
        f"{style.headings['course']}\n" + " ".join([*_course(plan, pool, words, dice),
                                                     *negations[split:], *closing]),
        f"{style.headings['dx']}\n{_dx_list(plan, style)}",
        f"{style.headings['meds']}\n{_med_list(plan, pool, style, dice)}",
    ]
    return "\n\n".join(parts) + "\n"


class _Words:
    """Fills templates with the patient's pronouns, title and name."""

    def __init__(self, who: Patient, style: SiteStyle):
        pro = "she" if who.female else "he"
        self.base = {"pro": pro, "Pro": pro.capitalize(), "last": who.last, "first": who.first,
                     "Title": "Ms." if who.female else "Mr.", "dis": who.discharge}
        self.who, self.style = who, style

    def fill(self, template: str, **kw: str) -> str:
        extra = {k.upper() if len(k) == 1 else k.capitalize(): _upper(v) for k, v in kw.items()}
        return template.format(**self.base, **kw, **extra)

    def subject(self) -> str:
        if self.style.use_first_name:
            return f"{self.who.first} {self.who.last}"
        return f"{self.base['Title']} {self.who.last}"


def _hpi(plan: NotePlan, words: _Words, dice: Dice, complaint: str) -> str:
    style, who = words.style, words.who
    age = style.age_format.format(age=who.age)
    sex = style.sex_words[1 - int(who.female)]
    history = [_lower(plan.mentions[plan.codes.index(c)]) for c in plan.in_history]
    hist = f"{style.history_lead} {_join(history)}" if history else "with no significant past medical history"
    first = f"{words.subject()} is a {age} {sex} {hist} who presents with {complaint}."
    finding = words.fill(dice.pick(style.finding_leads), m=_lower(plan.mentions[0]))
    return f"{first} {finding}"


def _vitals(style: SiteStyle, dice: Dice) -> str:
    return style.vitals_format.format(
        t=f"{36.4 + 2.6 * dice.u():.1f}", hr=60 + dice.index(60), sbp=100 + dice.index(70),
        dbp=55 + dice.index(40), rr=14 + dice.index(12), spo2=88 + dice.index(13))


def _course(plan: NotePlan, pool: CodePool, words: _Words, dice: Dice) -> list[str]:
    out = []
    for pos, code in enumerate(plan.codes):
        if pos and dice.chance(0.3):
            continue
        chapter = pool.chapters[code]
        med = " ".join(dice.pick(lex.MEDICATIONS[chapter])[:2])
        out.append(words.fill(dice.pick(words.style.course_templates), m=_lower(plan.mentions[pos]),
                              med=med, spec=lex.SPECIALTIES[chapter]))
    return out


def _dx_list(plan: NotePlan, style: SiteStyle) -> str:
    items = list(plan.mentions)
    if style.dx_format == 0:
        return "\n".join(f"{i}. {_upper(m)}" for i, m in enumerate(items, start=1))
    if style.dx_format == 1:
        return "\n".join(f"- {_upper(m)}" for m in items)
    rest = f"\nSecondary: {'; '.join(items[1:])}" if len(items) > 1 else ""
    return f"Primary: {items[0]}{rest}"


def _med_list(plan: NotePlan, pool: CodePool, style: SiteStyle, dice: Dice) -> str:
    meds = {}
    for code in plan.codes:
        name, strength, route, freq = dice.pick(lex.MEDICATIONS[pool.chapters[code]])
        if style.spell_out_meds:
            meds.setdefault(name, f"{name.capitalize()} {strength} {lex.FREQUENCY_WORDS[freq]}")
        else:
            meds.setdefault(name, f"{name.capitalize()} {strength} {route} {freq}")
    return "\n".join(f"{i}. {m}" for i, m in enumerate(meds.values(), start=1))


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _lower(text: str) -> str:
    """Lower the first letter unless the first word is an acronym ("COPD", "HTN")."""
    head = text.split(" ", 1)[0]
    return text if sum(ch.isupper() for ch in head) > 1 else text[:1].lower() + text[1:]


def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]
