"""Hypothesis strategies for multi-label note sets."""

from hypothesis import strategies as st

VOCAB = [f"C{j:02d}" for j in range(15)]


@st.composite
def label_sets(draw, min_notes: int = 1, max_notes: int = 120):
    """A list of code tuples: 1-4 distinct codes per note from a small vocabulary."""
    n_codes = draw(st.integers(1, len(VOCAB)))
    vocab = VOCAB[:n_codes]
    n = draw(st.integers(min_notes, max_notes))
    note = st.lists(st.sampled_from(vocab), min_size=1, max_size=min(4, n_codes), unique=True).map(tuple)
    return draw(st.lists(note, min_size=n, max_size=n))
