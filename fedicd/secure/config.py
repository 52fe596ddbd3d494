"""``[secure_aggregation]`` config section: which mechanism hides the clients' updates from the server.

``method``:

* ``"none"``: the server sees every update (plain FedAvg).
* ``"ckks"``: CKKS homomorphic addition (:mod:`fedicd.secure.ckks`). ``key_dir`` is the folder
  ``fedicd keys`` wrote: the server reads only ``public.ctx``; clients read ``secret.ctx``. The
  server never holds the global model in plain text. ``evaluator_key`` (a path to a secret
  context, e.g. ``<key_dir>/secret.ctx``) adds a key-holding evaluator that scores the global
  model every round; empty (default) = no evaluator: rounds carry client-side evaluation only and
  the experiment driver decrypts the final model after the run (see :mod:`fedicd.secure.ckks_round`).
  ``clip_values``: a model value outside ±``clip_range`` (of the keys' parameters) is clipped and
  counted instead of failing that client's update.
  ``workers``: worker processes for the clients' encryption and decryption, threads for the server's
  addition (0 = every core this process may use).
* ``"ckks-threshold"``: multiparty (threshold) CKKS on OpenFHE (:mod:`fedicd.secure.threshold`): the
  clients generate the joint key among themselves through the federation's messages, so no party
  ever holds the whole secret key; the server adds ciphertexts under the joint public key, and the
  new global model is decrypted only from the clients' partial decryptions (noise flooding on) and
  sent to everyone. ``threshold``: partial decryptions needed (0 = every key holder); too few end
  the round with a named error and the model unchanged. Needs the optional ``openfhe`` package.
* ``"secagg+"``: Flower's SecAgg+ (pairwise masks, Shamir shares; :mod:`fedicd.secure.secagg`):
  ``num_shares``, ``reconstruction_threshold`` (ints, or fractions of the sampled clients),
  ``max_weight`` (0: the largest client's example count, best for precision), ``clipping_range``,
  ``quantization_range``, ``modulus_range``, ``timeout_s`` (per protocol stage).

Strategies: under (shared-key) CKKS only those whose server step is the weighted mean (FedAvg, FedProx), since
the server never holds the aggregate in plain text; under SecAgg+ also the server optimizers
(FedAvgM, FedAdam, FedYogi, FedAdagrad), which step from the unmasked average, and likewise under
threshold CKKS, which decrypts the average for everyone; SCAFFOLD is refused under all three (its per-client control variates would need their own secure sum). Client-level DP
(clipping and noise applied by the server to the plain updates) is refused; sample-level DP-SGD
composes (noise is added on the client, before encryption or masking).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedicd.errors import ConfigError
from fedicd.strategies.config import SECURE_METHODS as _HIDING_METHODS

__all__ = ["SecureAggConfig", "SECURE_METHODS", "check_secure_compatible",
           "check_secure_staging"]

SECURE_METHODS = ("none", *_HIDING_METHODS)
# the methods, and which strategies run under each, are the strategy registry's (fedicd.strategies.config)


@dataclass(frozen=True)
class SecureAggConfig:
    method: str = "none"
    """How updates are hidden from the server: "none", "ckks" (homomorphic encryption, one key shared by the
    clients), "ckks-threshold" (multiparty CKKS on OpenFHE: a joint key no party holds) or "secagg+" (Flower's
    SecAgg+ masking)."""
    # ckks
    key_dir: str = ""
    """CKKS: the folder `fedicd keys` wrote (the server reads public.ctx only, clients secret.ctx)."""
    evaluator_key: str = ""
    """CKKS: path of a secret context for a key-holding evaluator that scores the global model every round; empty =
    no evaluator (the driver decrypts the final model after the run)."""
    clip_values: bool = False
    """CKKS: clip (and count) a model value outside the keys' clip range instead of refusing that client's
    update."""
    workers: int = 0
    """CKKS (both kinds): worker processes with which a client encrypts and decrypts, and threads with which the
    shared-key server adds; 0 = every core this process may use. The threshold-CKKS server adds in its own process
    (sending ciphertexts to workers cost more than the additions)."""
    # ckks-threshold
    threshold: int = 0
    """Threshold CKKS: partial decryptions needed to decrypt an aggregate (t of n); 0 = every key holder (n of
    n)."""
    # secagg+: Flower's SecAggPlusWorkflow parameters (validated by fedicd.secure.secagg.SecAggPlusConfig)
    num_shares: int | float = 1.0
    """SecAgg+: Shamir shares per client's secret, an int or a fraction of the sampled clients."""
    reconstruction_threshold: int | float = 0.5
    """SecAgg+: shares needed to reconstruct a secret, an int or a fraction of the sampled clients (below
    num_shares)."""
    max_weight: float = 0.0  # 0 = the largest client's example count (resolved when the run is staged)
    """SecAgg+: largest client weight (example count) the quantised aggregate must hold; 0 = the largest client's
    example count."""
    clipping_range: float = 8.0
    """SecAgg+: model values are clipped to ±this before quantisation."""
    quantization_range: int = 2**22
    """SecAgg+: quantisation levels of a clipped value."""
    modulus_range: int = 2**32
    """SecAgg+: modulus of the masked integer arithmetic."""
    timeout_s: float = 600.0
    """SecAgg+ and threshold CKKS: seconds allowed per protocol stage."""

    def __post_init__(self) -> None:
        if self.method not in SECURE_METHODS:
            raise ConfigError(f"secure_aggregation.method must be one of {list(SECURE_METHODS)}, got {self.method!r}")
        if self.method == "ckks" and not self.key_dir:
            raise ConfigError("secure_aggregation.method = 'ckks' needs secure_aggregation.key_dir (run "
                              "`fedicd keys --out DIR` first)")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"secure_aggregation.workers must be an integer >= 0 (0 = every core), got "
                              f"{self.workers!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or self.threshold < 0:
            raise ConfigError(f"secure_aggregation.threshold must be an integer >= 0 (0 = every key holder), got "
                              f"{self.threshold!r}")
        if self.threshold and self.method != "ckks-threshold":
            raise ConfigError(f"secure_aggregation.threshold = {self.threshold} applies to method = "
                              f"'ckks-threshold' only (method is {self.method!r})")
        for name in ("key_dir", "evaluator_key"):  # resumed runs and Ray workers may start elsewhere
            if getattr(self, name):
                object.__setattr__(self, name, str(Path(getattr(self, name)).expanduser().resolve()))
        if self.method == "secagg+":
            if not self.max_weight >= 0:
                raise ConfigError(f"secure_aggregation.max_weight must be >= 0 (0 = the largest client), got "
                                  f"{self.max_weight}")
            try:
                self.secagg(largest_client=1)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc

    def secagg(self, largest_client: int):
        """The :class:`fedicd.secure.secagg.SecAggPlusConfig` of these settings (``max_weight = 0`` →
        ``largest_client``, the largest client's example count)."""
        from fedicd.secure.secagg_config import SecAggPlusConfig

        return SecAggPlusConfig(num_shares=self.num_shares, reconstruction_threshold=self.reconstruction_threshold,
                                max_weight=float(self.max_weight or largest_client), clipping_range=self.clipping_range,
                                quantization_range=self.quantization_range, modulus_range=self.modulus_range,
                                timeout=self.timeout_s)

    @property
    def enabled(self) -> bool:
        return self.method != "none"


def check_secure_compatible(secure: SecureAggConfig, strategy: str, dp: str, mode: str, *,
                            distributed_dp: bool = False) -> None:
    """Refuse, before anything runs, the combinations a secure aggregate cannot serve."""
    if distributed_dp and secure.method != "secagg+":
        raise ConfigError("privacy.distributed = true needs secure_aggregation.method = 'secagg+': the clients add "
                          "their noise shares so that only the masked sum is ever seen; without SecAgg+ the server "
                          f"would see each noised update (got method = {secure.method!r})")
    if not secure.enabled:
        return
    if mode != "federated":
        raise ConfigError(f"secure_aggregation.method = {secure.method!r} needs train.mode = 'federated'")
    from fedicd.strategies.config import secure_strategies

    allowed = secure_strategies(secure.method)
    if strategy not in allowed:
        why = ("the server never holds the plain aggregate its step needs" if secure.method == "ckks"
               else "its per-client control variates would need their own secure sum")
        raise ConfigError(f"federated.strategy = {strategy!r} cannot run under secure aggregation "
                          f"({secure.method}): {why}; use one of {list(allowed)}")
    if dp == "client" and not distributed_dp:
        raise ConfigError(f"privacy.dp = 'client' cannot run under secure aggregation ({secure.method}): Flower's "
                          "client-level DP clips and noises on the server, which never sees the plain updates; "
                          "use privacy.dp = 'sample' (DP-SGD on the clients, noise added before encryption) or, under "
                          "SecAgg+, privacy.distributed = true (the clients add the noise shares before masking)")


def check_secure_staging(secure: SecureAggConfig, *, client_sizes: list[int], sampled: int,
                         arrays: dict) -> None:
    """Checks that need the staged run (client sizes, the model), made before the first round."""
    if secure.method == "ckks":
        from fedicd.secure.ckks_round import read_params

        params = read_params(secure.key_dir)
        if len(client_sizes) > params.max_clients:
            raise ConfigError(f"{len(client_sizes)} clients exceed the CKKS keys' max_clients = {params.max_clients} "
                              f"(make keys with `fedicd keys --max-clients {len(client_sizes)}`)")
        if max(client_sizes) > params.max_count:
            raise ConfigError(f"a client holds {max(client_sizes)} notes, above the CKKS keys' max_count = "
                              f"{params.max_count} (make keys with a larger --max-count)")
        ints = sorted(k for k, v in arrays.items() if v.dtype.kind not in "f")
        if ints:
            raise ConfigError(f"the head has integer buffers {ints} (BatchNorm's counters), which CKKS would average "
                              "as values and then refuse once they pass clip_range; use train.norm = 'layer' or "
                              "'group' under secure_aggregation.method = 'ckks'")
    elif secure.method == "ckks-threshold":
        from fedicd.secure.threshold.backend import load_openfhe, require_shamir
        from fedicd.secure.threshold.messages import threshold_params
        from fedicd.secure.threshold.server import check_threshold

        check_threshold(secure.threshold, len(client_sizes))
        ints = sorted(k for k, v in arrays.items() if v.dtype.kind not in "f")
        if ints:
            raise ConfigError(f"the head has integer buffers {ints} (BatchNorm's counters), which threshold CKKS "
                              "would average as values; use train.norm = 'layer' or 'group' under "
                              "secure_aggregation.method = 'ckks-threshold'")
        fhe = load_openfhe()
        if 1 < secure.threshold < len(client_sizes):
            require_shamir(fhe)
        threshold_params(len(client_sizes), max(client_sizes))
    elif secure.method == "secagg+":
        sa = secure.secagg(largest_client=max(client_sizes))
        try:
            sa.check_round(sampled)
            sa.check_weights(client_sizes)
        except ValueError as exc:
            raise ConfigError(f"secure_aggregation (secagg+): {exc}") from exc
