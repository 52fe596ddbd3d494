"""Attacks on fedicd's embeddings and updates; sees only what an adversary would hold.

A separate top-level package: it may import from :mod:`fedicd` only what an
adversary would have (a public encoder, public auxiliary text, released
embeddings or updates). Empty until the attacks issues land.
"""

__all__: list[str] = []
