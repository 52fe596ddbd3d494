"""StandardScaler persistence: fitted on training embeddings only, saved as plain arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.preprocessing import StandardScaler

__all__ = ["save_scaler", "load_scaler"]


def save_scaler(scaler: StandardScaler, path: str | Path) -> None:
    """Write ``mean_``, ``scale_``, ``var_`` and ``n_samples_seen_`` to an ``.npz`` (no pickle)."""
    np.savez(path, mean=scaler.mean_, scale=scaler.scale_, var=scaler.var_,
             n_samples_seen=np.asarray(scaler.n_samples_seen_))


def load_scaler(path: str | Path) -> StandardScaler:
    """Rebuild a fitted :class:`StandardScaler` from :func:`save_scaler`'s file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scaler file not found: {path}")
    with np.load(path) as z:
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_, scaler.var_ = z["mean"], z["scale"], z["var"]
        scaler.n_samples_seen_ = z["n_samples_seen"]
        scaler.n_features_in_ = len(scaler.mean_)
    return scaler
