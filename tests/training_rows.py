"""Small seeded training rows shared by the training-loop tests."""

from __future__ import annotations

import numpy as np


class Rows:
    """A client's data: training rows, no validation rows."""

    def __init__(self, x, y):
        self.x_train, self.y_train, self.x_val, self.y_val = x, y, x[:0], y[:0]


def seeded_rows(n=90, d=12, c=5, seed=0):
    """``n`` Gaussian rows of ``d`` features and ``c`` labels, each a linear threshold of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x @ rng.normal(size=(d, c)) > 1.0).astype(np.float32)
