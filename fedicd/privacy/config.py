"""``[privacy]`` config section: sample-level DP-SGD, client-level central DP, and Gaussian embedding noise.

:func:`noise_embeddings` is the one piece of arithmetic here: the ``embedding_noise``
defence, applied where the notes are embedded (:func:`fedicd.prepare.embed_parts`),
before the shared scaler is fitted and before any training. It lives beside its
config so that the data-preparation stage can apply it without importing the
defences stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedicd.errors import ConfigError

__all__ = ["PrivacyConfig", "DP_MODES", "CLIPPING_MODES", "DEFAULT_DELTA", "noise_embeddings"]

DP_MODES = ("none", "sample", "client")
CLIPPING_MODES = ("fused", "ghost", "hooks")
DEFAULT_DELTA = 1e-5


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy settings.

    ``dp = "sample"``: every client runs DP-SGD on its own notes (Poisson
    sampling with rate ``train.batch_size / n_client``, per-sample clipping at
    ``clip``, Gaussian noise ``noise · clip``). Give either ``noise`` (σ) or
    ``target_epsilon``: the latter calibrates σ per client, before training,
    for the whole planned run (rounds × local epochs × 1/q steps) at
    ``delta``. ``delta = 0`` means 1e-5, which must be below 1/n for every
    client. ``clipping`` picks how per-sample norms are computed: ``"fused"``
    (fedicd's exact one-pass norms for Linear/LayerNorm/GroupNorm heads),
    ``"ghost"`` (Opacus' ghost clipping) or ``"hooks"`` (Opacus' per-sample
    gradients); all three clip exactly.

    ``dp = "client"``: client-level central DP with Flower's fixed-clipping
    wrappers: each client's model update is clipped to ``clip`` (on the server,
    or on the client with ``client_side_clipping``) and the server adds
    Gaussian noise ``noise · clip / n_sampled`` to the average. ``noise`` or
    ``target_epsilon`` as above, with client-level ε from Flower's RDP
    accountant (needs equal client weights and no sampling amplification).

    ``embedding_noise = σ > 0`` (independent of ``dp``): every note's embedding
    is scaled to unit length and Gaussian noise σ·N(0, I) is added (see
    :func:`noise_embeddings`) before the scaler and the head see it: a heuristic
    defence against embedding inversion (Song & Raghunathan 2020), with no ε.
    """

    dp: str = "none"
    """The DP mode: "none", "sample" (DP-SGD on every client: epsilon protects one note) or "client" (clipped
    updates + server noise: epsilon protects one client's whole contribution)."""
    clip: float = 1.0
    """Clipping norm C: of each per-sample gradient (sample) or of each client's model update (client)."""
    noise: float = 0.0
    """Noise multiplier sigma (Gaussian noise sigma x C); give either this or target_epsilon."""
    target_epsilon: float = 0.0
    """Calibrate sigma, before training, so the whole planned run spends this epsilon at delta; give either this or
    noise."""
    delta: float = 0.0
    """DP delta; 0 = 1e-5 (must be below 1/n for every client under sample-level DP)."""
    clipping: str = "fused"
    """How per-sample gradient norms are computed under sample-level DP: "fused" (fedicd's exact one-pass norms),
    "ghost" (Opacus ghost clipping) or "hooks" (Opacus per-sample gradients); all clip exactly."""
    client_side_clipping: bool = False
    """Client-level DP: clip each update on the client instead of on the server."""
    secure_rng: bool = False
    """Seed noise and Poisson sampling from the OS's secure randomness (Opacus secure_mode noise; not reproducible);
    with it every round ever trained is accounted."""
    embedding_noise: float = 0.0
    """Gaussian embedding noise sigma (0 = off): each note's vector is scaled to unit length and N(0, sigma^2 I)
    noise is added before the scaler is fitted and before training (a heuristic defence, no epsilon); any dp mode."""

    def __post_init__(self) -> None:
        if self.dp not in DP_MODES:
            raise ConfigError(f"privacy.dp must be one of {list(DP_MODES)}, got {self.dp!r}")
        if self.clipping not in CLIPPING_MODES:
            raise ConfigError(f"privacy.clipping must be one of {list(CLIPPING_MODES)}, got {self.clipping!r}")
        for name in ("clip", "noise", "target_epsilon", "delta", "embedding_noise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"privacy.{name} must be a finite number, got {value!r}")
        if self.clip <= 0:
            raise ConfigError(f"privacy.clip must be > 0, got {self.clip}")
        if self.noise < 0 or self.target_epsilon < 0:
            raise ConfigError(f"privacy.noise and privacy.target_epsilon must be >= 0, got {self.noise} and "
                              f"{self.target_epsilon}")
        if self.embedding_noise < 0:
            raise ConfigError(f"privacy.embedding_noise must be >= 0 (0 = off), got {self.embedding_noise}")
        if not 0 <= self.delta < 1:
            raise ConfigError(f"privacy.delta must be in [0, 1) (0 = {DEFAULT_DELTA}), got {self.delta}")
        if self.enabled and (self.noise > 0) == (self.target_epsilon > 0):
            raise ConfigError(f"privacy.dp = {self.dp!r} needs exactly one of privacy.noise (σ > 0) and "
                              f"privacy.target_epsilon (> 0); got noise={self.noise}, "
                              f"target_epsilon={self.target_epsilon}")

    @property
    def enabled(self) -> bool:
        return self.dp != "none"

    @property
    def resolved_delta(self) -> float:
        return self.delta or DEFAULT_DELTA


def noise_embeddings(vectors: np.ndarray, sigma: float, *, seed: int) -> np.ndarray:
    """Unit-normalise each row, then add N(0, σ² I) noise: the ``privacy.embedding_noise`` defence.

    Parameters
    ----------
    vectors : array [n, dim]
        One embedding per note, in note order.
    sigma : float
        Noise standard deviation relative to the unit-length vector (σ ≥ 0).
    seed : int
        Seed of the noise (``numpy.random.default_rng(seed)``; staging passes the experiment seed).

    Returns
    -------
    array [n, dim], float32

    Notes
    -----
    The same arithmetic as the adversary's copy, :func:`attacks.defences.gaussian_noise`
    (fedicd's defender side does not import ``attacks``; a test checks both agree).
    Privacy: a heuristic defence against embedding inversion (Song & Raghunathan,
    "Information Leakage in Embedding Models", CCS 2020); it carries no ε.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"embedding noise sigma must be a finite number >= 0, got {sigma!r}")
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ConfigError(f"embedding noise needs a 2-D array [notes, dim], got shape {x.shape}")
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    return (unit + sigma * rng.standard_normal(unit.shape)).astype(np.float32)
