"""What a federated server holds when it inverts a client's update: the :class:`UpdateView`.

Threat model (:data:`attacks.threat.THREAT_MODELS` ``"update_inversion"``): the
server holds the weights it sent, the weights a client returned (or, under
secure aggregation, only the average of the round's clients' returned weights
and their count), the names of the head's first linear layer, optionally the
shared StandardScaler's statistics (fedicd stages one scaler fitted on all
training embeddings and saves it as ``scaler.npz`` beside the run, so a server
that staged the run holds it) and the public local recipe (optimizer, learning
rate, weight decay). It never holds a client's rows or labels: the constructor
refuses any other keyword with :class:`~attacks.threat.ThreatModelError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from attacks.threat import ThreatModelError

__all__ = ["LocalRecipe", "UpdateView", "UpdateShapeError", "NonFiniteUpdateError", "EmptyUpdateError",
           "OPTIMIZERS"]

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")


class UpdateShapeError(ValueError):
    """The update lacks the first linear layer, or its arrays do not have the shapes of a Linear(d, h)."""


class NonFiniteUpdateError(ValueError):
    """The sent or returned weights hold NaN or Inf."""


class EmptyUpdateError(ValueError):
    """No unit of the first layer moved: nothing can be recovered from this update."""


@dataclass(frozen=True)
class LocalRecipe:
    """The public local training recipe the server itself sent with the round.

    ``lr`` is the learning rate of the round's (first) local step and ``weight_decay`` the
    optimizer's; ``clip_norm`` the client-level DP clipping norm of the update (None when the
    update is not clipped). With plain SGD, ``W' = W - lr (g + wd W)``, so the server recovers
    the summed gradient ``g = (W - W') / lr - wd W`` exactly for one step.
    """

    optimizer: str = "sgd"
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (np.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm!r}")


def _arrays(name: str, state: Mapping) -> dict[str, np.ndarray]:
    if not isinstance(state, Mapping):
        raise ThreatModelError(f"{name} must be a mapping of parameter name -> array, got {type(state).__name__}")
    out = {}
    for key, value in state.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            raise ThreatModelError(f"{name}[{key!r}] must be a numeric array, got dtype {arr.dtype}")
        out[str(key)] = arr.astype(np.float64)
    return out


class UpdateView:
    """The server's view of one round: what it sent and what came back.

    Parameters
    ----------
    sent : mapping of str -> array
        The global weights the server sent (``state_dict`` names, e.g. ``net.0.weight``).
    returned : mapping of str -> array
        The weights one client returned, or the (weighted) average of the round's clients'
        returned weights when the server only sees the aggregate (``n_clients`` > 1).
    n_clients : int
        How many clients ``returned`` averages (1 = a single client's update).
    weight_name, bias_name : str
        The first linear layer (fedicd's heads: ``net.0.weight`` / ``net.0.bias``).
    scaler_mean, scaler_scale : arrays [d], optional
        The shared StandardScaler's statistics, when the server knows them.
    recipe : LocalRecipe, optional
        The public local recipe, to undo the learning rate and weight decay.

    Any other keyword (e.g. ``x_train``, ``labels``) raises :class:`ThreatModelError`.
    """

    def __init__(self, *, sent: Mapping, returned: Mapping, n_clients: int = 1, weight_name: str = "net.0.weight",
                 bias_name: str = "net.0.bias", scaler_mean: np.ndarray | None = None,
                 scaler_scale: np.ndarray | None = None, recipe: LocalRecipe | None = None, **other: object) -> None:
        if other:
            raise ThreatModelError(f"UpdateView got {sorted(other)}: a server holds only the weights it sent, the "
                                   "weights returned (or their aggregate), the layer names, the scaler statistics "
                                   "and the public recipe, never a client's rows or labels")
        self.sent, self.returned = _arrays("sent", sent), _arrays("returned", returned)
        extra = sorted(set(self.returned) - set(self.sent))
        if extra:
            raise ThreatModelError(f"returned holds {extra}, which are not parameters the server sent")
        if not (isinstance(n_clients, int) and n_clients >= 1):
            raise ValueError(f"n_clients must be an int >= 1, got {n_clients!r}")
        if recipe is not None and not isinstance(recipe, LocalRecipe):
            raise TypeError(f"recipe must be a LocalRecipe or None, got {type(recipe).__name__}")
        self.n_clients, self.weight_name, self.bias_name, self.recipe = n_clients, weight_name, bias_name, recipe
        self._check_layer()
        self.scaler = self._check_scaler(scaler_mean, scaler_scale)

    def _check_layer(self) -> None:
        for key in (self.weight_name, self.bias_name):
            for side, state in (("sent", self.sent), ("returned", self.returned)):
                if key not in state:
                    raise UpdateShapeError(f"{side} has no first-layer array {key!r}; it holds {sorted(state)}")
                if not np.isfinite(state[key]).all():
                    raise NonFiniteUpdateError(f"{side}[{key!r}] holds NaN or Inf")
            if self.sent[key].shape != self.returned[key].shape:
                raise UpdateShapeError(f"returned[{key!r}] has shape {self.returned[key].shape}, the server sent "
                                       f"{self.sent[key].shape}")
        w, b = self.sent[self.weight_name], self.sent[self.bias_name]
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise UpdateShapeError(f"{self.weight_name!r} must be [h, d] and {self.bias_name!r} [h]; got {w.shape} "
                                   f"and {b.shape}")

    def _check_scaler(self, mean, scale) -> tuple[np.ndarray, np.ndarray] | None:
        if (mean is None) != (scale is None):
            raise ValueError("give both scaler_mean and scaler_scale, or neither")
        if mean is None:
            return None
        mean, scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        if mean.shape != (self.input_dim,) or scale.shape != (self.input_dim,):
            raise ValueError(f"scaler statistics must have shape ({self.input_dim},), got {mean.shape} and "
                             f"{scale.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("scaler statistics must be finite with scale > 0")
        return mean, scale

    @property
    def input_dim(self) -> int:
        return int(self.sent[self.weight_name].shape[1])

    @property
    def hidden(self) -> int:
        return int(self.sent[self.weight_name].shape[0])

    def gradients(self) -> tuple[np.ndarray, np.ndarray]:
        """(G_W [h, d], g_b [h]): the first layer's summed gradient, up to one positive factor.

        Without a recipe, ``W - W'`` (the learning rate cancels in the ratio row/bias). With an
        SGD recipe the weight decay is undone: ``(W - W') / lr - wd W``. With AdamW (decoupled
        decay ``W' = W (1 - lr wd) - lr u``) the decay is undone the same way, leaving ``u``,
        which after one step is ``m / (sqrt(v) + eps)``, close to the gradient's sign, not the gradient.
        """
        w, b = self.sent[self.weight_name], self.sent[self.bias_name]
        dw, db = w - self.returned[self.weight_name], b - self.returned[self.bias_name]
        r = self.recipe
        if r is None or r.weight_decay == 0:
            return dw, db
        if r.clip_norm is not None and self._clipped(r.clip_norm):
            log.info("the update's norm reached clip_norm=%g: its scale is unknown, weight decay not undone",
                     r.clip_norm)
            return dw, db
        return dw / r.lr - r.weight_decay * w, db / r.lr - r.weight_decay * b

    def _clipped(self, clip_norm: float) -> bool:
        sq = sum(float(((self.sent[k] - self.returned[k]) ** 2).sum()) for k in self.returned)
        return np.sqrt(sq) >= clip_norm * (1 - 1e-3)
