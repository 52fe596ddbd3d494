"""Public warm starts of the head that spend no privacy: ICD description rows (a zero-shot coder) and
non-private pre-training on a public corpus. See :mod:`fedicd.warm_start.config` for the ``[warm_start]`` keys."""

from fedicd.warm_start.config import DESCRIPTION_HEADS, INITS, WarmStartConfig

__all__ = ["DESCRIPTION_HEADS", "INITS", "WarmStartConfig"]
