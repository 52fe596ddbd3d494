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

__all__ = ["PrivacyConfig", "DP_MODES", "CLIPPING_MODES", "ACCOUNTANT_CHOICES", "CLIENT_SAMPLING", "DEFAULT_DELTA",
           "noise_embeddings"]

DP_MODES = ("none", "sample", "client")
CLIPPING_MODES = ("auto", "fused", "ghost", "hooks")
ACCOUNTANT_CHOICES = ("rdp", "pld")  # fedicd.privacy.accountants.ACCOUNTANTS (kept import-free here)
CLIENT_SAMPLING = ("fixed", "poisson")
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
    client. ``clipping`` picks how per-sample norms are computed: ``"auto"``
    (the default: ``"fused"`` when every trainable layer of the head has a
    fused norm, else ``"ghost"``; resolved when the run is planned and recorded
    in the plan), ``"fused"`` (fedicd's exact one-pass norms for Linear on
    vectors or chunk sequences, Conv1d, LayerNorm and GroupNorm), ``"ghost"``
    (Opacus' ghost clipping) or ``"hooks"`` (Opacus' per-sample gradients);
    all clip exactly.

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
    clipping: str = "auto"
    """How per-sample gradient norms are computed under sample-level DP: "auto" (resolved when the run is planned:
    "fused" when every trainable layer of the head has a fused norm, else "ghost", with a head notice; the plan
    records the choice), "fused" (fedicd's exact one-pass norms: Linear on vectors or chunk sequences, Conv1d,
    LayerNorm, GroupNorm; refused at planning for other layers), "ghost" (Opacus ghost clipping)
    or "hooks" (Opacus per-sample gradients); all clip exactly."""
    client_side_clipping: bool = False
    """Client-level DP: clip each update on the client instead of on the server."""
    secure_rng: bool = False
    """Seed noise and Poisson sampling from the OS's secure randomness (Opacus secure_mode noise; not reproducible);
    with it every round ever trained is accounted."""
    embedding_noise: float = 0.0
    """Gaussian embedding noise sigma (0 = off): each note's vector is scaled to unit length and N(0, sigma^2 I)
    noise is added before the scaler is fitted and before training (a heuristic defence, no epsilon); any dp mode."""
    accountant: str = "rdp"
    """The accountant that calibrates sigma and enforces the budget: "rdp" (Renyi DP) or "pld" (privacy loss
    distributions, tighter); both epsilons are reported either way."""
    client_sampling: str = "fixed"
    """Client-level DP: "fixed" (Flower's fixed-size cohort each round, no amplification credited) or "poisson"
    (each client joins a round independently with rate clients_per_round / population; the amplification is
    accounted)."""
    clients_per_round: int = 0
    """Client-level DP: the (expected) cohort per round; 0 = federated.fraction_train x the number of clients.
    Under Poisson sampling the noised sum is divided by this fixed number, not by the realised cohort."""
    adaptive_clipping: bool = False
    """Client-level DP: adapt the clipping norm each round towards the target_quantile of update norms (Andrew et
    al. 2021; Flower's adaptive-clipping wrappers); privacy.clip is the initial norm."""
    target_quantile: float = 0.5
    """Adaptive clipping: the quantile of client update norms the clipping norm tracks."""
    clip_count_stddev: float = 0.0
    """Adaptive clipping: std of the noise on the count of clipped updates; 0 = cohort / 20 (Andrew et al.)."""
    distributed: bool = False
    """Client-level DP noise added by the clients, each a share sigma / sqrt(cohort), before SecAgg+ masking, so the
    server only ever sees the noised sum (needs secure_aggregation.method = "secagg+")."""

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
        if self.accountant not in ACCOUNTANT_CHOICES:
            raise ConfigError(f"privacy.accountant must be one of {list(ACCOUNTANT_CHOICES)}, got {self.accountant!r}")
        if self.client_sampling not in CLIENT_SAMPLING:
            raise ConfigError(f"privacy.client_sampling must be one of {list(CLIENT_SAMPLING)}, "
                              f"got {self.client_sampling!r}")
        if isinstance(self.clients_per_round, bool) or not isinstance(self.clients_per_round, int) \
                or self.clients_per_round < 0:
            raise ConfigError(f"privacy.clients_per_round must be an integer >= 0 (0 = derived from "
                              f"federated.fraction_train), got {self.clients_per_round!r}")
        for name in ("target_quantile", "clip_count_stddev"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"privacy.{name} must be a finite number, got {value!r}")
        if not 0 < self.target_quantile < 1:
            raise ConfigError(f"privacy.target_quantile must be in (0, 1), got {self.target_quantile}")
        if self.clip_count_stddev < 0:
            raise ConfigError(f"privacy.clip_count_stddev must be >= 0 (0 = cohort / 20), got {self.clip_count_stddev}")
        if self.dp != "client":
            client_only = [name for name, on in (("client_sampling = 'poisson'", self.client_sampling == "poisson"),
                                                 ("clients_per_round", self.clients_per_round > 0),
                                                 ("adaptive_clipping", self.adaptive_clipping),
                                                 ("distributed", self.distributed)) if on]
            if client_only:
                raise ConfigError(f"privacy.{client_only[0]} is a client-level DP setting; it needs "
                                  f"privacy.dp = 'client', got dp = {self.dp!r}")
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
