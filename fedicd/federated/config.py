"""``[federated]`` config section: rounds, strategy, sampling, faults (paper defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from fedicd.errors import ConfigError
from fedicd.strategies.config import strategy_args, strategy_names

__all__ = ["FedConfig", "ENGINES", "FAULT_KINDS", "LOCAL_OPTIMIZERS"]

FAULT_KINDS = ("raise", "nan", "shape")
LOCAL_OPTIMIZERS = ("adamw", "sgd")
ENGINES = ("ray", "inprocess")


@dataclass(frozen=True)
class FedConfig:
    """Federated training settings (Xu & Dray, 2025: 20 clients, 100 rounds, FedAvg).

    ``min_available``, ``min_train``, ``min_evaluate`` = 0 derive the paper's
    ratios from the number of clients K: K/2, K/2 and K/4 (10, 10, 5 for 20).
    The clients themselves come from ``[partition]``.

    ``fault_clients`` / ``fault_kind`` / ``fault_rounds`` inject misbehaving
    clients for robustness studies: ``"raise"`` (the client crashes),
    ``"nan"`` (its update carries NaN), ``"shape"`` (an array of the wrong
    shape); ``fault_rounds`` empty means every round.

    ``node_wait_s``: before every round the server waits up to this long for
    all the partition's clients to be connected (a freshly started simulation
    registers its nodes over a few seconds, and Flower's sampler would
    otherwise draw from whoever is there: a first round with 1 of 3 clients).

    ``max_rejected_share``: the largest share, in [0, 1], of the sampled
    clients' updates (summed over all rounds) that may fail to reach the
    global model, refused by the server (a NaN or wrongly shaped update, a
    ciphertext under another key, a halted SecAgg+ round) or lost (a client
    error, no reply), before the run counts as failed: its results are
    written, then ``fedicd run`` exits non-zero with a summary. A run in which
    no round updated the model fails whatever this share.

    ``local_optimizer`` is the clients' optimizer: ``"adamw"`` (the paper's,
    re-created every round, as in Flower's examples) or ``"sgd"`` (plain SGD,
    no state; ``local_momentum`` adds momentum, reset every round).
    ``local_lr`` is its peak learning rate (0 = ``train.lr``),
    decayed by the same cosine schedule as centralized training. With small
    clients (~100 notes) a fresh AdamW each round loses much of centralized
    accuracy and plain SGD at a large rate keeps most of it (README,
    "Federated parity").
    """

    rounds: int = 100
    """Federated rounds (one aggregation of client updates each)."""
    strategy: str = "fedavg"  # a name registered in fedicd.strategies.config
    """Aggregation strategy, a name in the strategy registry: fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad
    or scaffold."""
    local_epochs: int = 1
    """Epochs each sampled client trains on its own notes per round."""
    local_optimizer: str = "adamw"
    """Clients' optimizer: "adamw" (the paper's, re-created every round) or "sgd" (SGD, with local_momentum)."""
    local_lr: float = 0.0
    """Clients' peak learning rate under the cosine schedule; 0 = train.lr."""
    local_momentum: float = 0.0
    """Momentum of the clients' SGD (local_optimizer = "sgd"), in [0, 1); 0 = plain SGD. The buffer starts afresh
    every round; under sample-level DP it acts on the noised gradients (post-processing: no privacy cost). Must be
    0 with AdamW."""
    fraction_train: float = 1.0
    """Share of the available clients sampled for training each round, in [0, 1]."""
    fraction_evaluate: float = 0.5
    """Share of the available clients sampled for client-side evaluation each round, in [0, 1]."""
    min_available: int = 0
    """Clients that must be connected before a round starts; 0 = n_clients / 2 (the paper's ratio)."""
    min_train: int = 0
    """Fewest clients sampled for training; 0 = n_clients / 2."""
    min_evaluate: int = 0
    """Fewest clients sampled for evaluation; 0 = n_clients / 4."""
    # strategies' hyper-parameters: the one place their defaults live (fedicd.strategies.config)
    proximal_mu: float = 0.01
    """FedProx proximal-term weight mu."""
    server_lr: float = 1.0
    """Server learning rate of FedAvgM."""
    server_momentum: float = 0.9
    """Server momentum of FedAvgM."""
    eta: float = 1e-2
    """Server learning rate of FedAdam, FedYogi and FedAdagrad."""
    eta_l: float = 1e-3
    """Client learning rate assumed by FedAdam, FedYogi and FedAdagrad (Flower's eta_l)."""
    beta_1: float = 0.9
    """First-moment decay of FedAdam and FedYogi."""
    beta_2: float = 0.99
    """Second-moment decay of FedAdam and FedYogi."""
    tau: float = 1e-3
    """Adaptivity (epsilon) of FedAdam, FedYogi and FedAdagrad."""
    validate_updates: bool = True
    """Refuse client updates that carry NaN/inf or arrays of the wrong shape (they count as rejected) instead of
    aggregating them."""
    total_cpus: int = 2
    """CPUs the Ray simulation may use in all."""
    client_cpus: float = 1.0
    """CPUs reserved per simulated client (total_cpus / client_cpus clients run at once)."""
    timeout_s: float = 3600.0
    """Seconds the server waits for a round's client replies; a client that misses it counts as lost."""
    node_wait_s: float = 120.0
    """Seconds the server waits, before every round, for all the partition's clients to be connected."""
    checkpoint_every: int = 1
    """Write the resumable checkpoint every this many rounds (and after the last)."""
    fault_clients: tuple[int, ...] = ()
    """Client ids that misbehave (robustness studies); empty = none."""
    fault_kind: str = "raise"
    """How the fault clients misbehave: "raise" (crash), "nan" (NaN update) or "shape" (an array of the wrong
    shape)."""
    fault_rounds: tuple[int, ...] = ()
    """Rounds in which fault clients misbehave; empty = every round."""
    max_rejected_share: float = 0.5
    """Largest share, in [0, 1], of sampled clients' updates (over all rounds) that may be refused or lost before
    the run counts as failed."""
    engine: str = "ray"
    """Where the clients run: "ray" (Flower's simulation engine, one Ray worker per client, in parallel) or
    "inprocess" (one after another in the driver's process, through fedicd's in-process grid: no Ray
    start-up, the same numbers; for small runs and tests)."""
    eval_every: int = 1
    """Evaluate the global model (the server's evaluation notes and the clients' federated evaluation) every this
    many rounds and after the last; 1 = every round (the paper's protocol). Rounds in between train only: their
    history rows carry no evaluation scores."""
    ray_address: str = ""
    """Ray cluster to run the simulation on (engine = "ray"): "" starts a local Ray on this machine; "auto" joins
    the cluster this machine is a node of; "ray://host:10001" connects a Ray client to a remote head node."""
    server_eval: bool = True
    """The server holds evaluation notes of its own (server/eval.npz: validation and test splits) and scores the
    global model on them every round, choosing the decision threshold on its validation split. False: the server
    holds no notes at all; only the clients' federated evaluation (fraction_evaluate) scores the model."""

    def __post_init__(self) -> None:
        if not self.node_wait_s >= 0:
            raise ConfigError(f"federated.node_wait_s must be >= 0, got {self.node_wait_s}")
        for name in ("rounds", "local_epochs", "total_cpus", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"federated.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("fraction_train", "fraction_evaluate", "max_rejected_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"federated.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.strategy not in strategy_names():  # the strategy registry imports no Flower
            raise ConfigError(f"federated.strategy must be one of {list(strategy_names())}, got {self.strategy!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"federated.engine must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.local_optimizer not in LOCAL_OPTIMIZERS:
            raise ConfigError(f"federated.local_optimizer must be one of {list(LOCAL_OPTIMIZERS)}, "
                              f"got {self.local_optimizer!r}")
        if not (self.local_lr >= 0.0 and self.local_lr < float("inf")):
            raise ConfigError(f"federated.local_lr must be >= 0 (0 = train.lr), got {self.local_lr}")
        if not 0.0 <= self.local_momentum < 1.0:
            raise ConfigError(f"federated.local_momentum must be in [0, 1), got {self.local_momentum}")
        if self.local_momentum and self.local_optimizer != "sgd":
            raise ConfigError(f"federated.local_momentum = {self.local_momentum} needs federated.local_optimizer = "
                              f"'sgd', got {self.local_optimizer!r} (AdamW keeps its own moments; set it to 0)")
        if self.fault_kind not in FAULT_KINDS:
            raise ConfigError(f"federated.fault_kind must be one of {list(FAULT_KINDS)}, got {self.fault_kind!r}")
        if not 0 < self.client_cpus <= self.total_cpus:
            raise ConfigError(f"federated.client_cpus must be in (0, total_cpus={self.total_cpus}], "
                              f"got {self.client_cpus}")
        if self.ray_address and not (self.ray_address == "auto" or self.ray_address.startswith("ray://")):
            raise ConfigError(f"federated.ray_address must be '' (a local Ray), 'auto' or 'ray://host:port', "
                              f"got {self.ray_address!r}")
        if self.ray_address and self.engine != "ray":
            raise ConfigError(f"federated.ray_address = {self.ray_address!r} needs federated.engine = 'ray', "
                              f"got {self.engine!r}")
        if not self.server_eval and self.fraction_evaluate == 0:
            raise ConfigError("federated.server_eval = false and federated.fraction_evaluate = 0: nobody would "
                              "evaluate the model; let the server hold evaluation notes or the clients evaluate")
        object.__setattr__(self, "fault_clients", tuple(int(c) for c in self.fault_clients))
        object.__setattr__(self, "fault_rounds", tuple(int(r) for r in self.fault_rounds))

    def node_minimums(self, n_clients: int) -> tuple[int, int, int]:
        """(min_available, min_train, min_evaluate), derived or checked against ``n_clients``."""
        derived = (max(1, n_clients // 2), max(1, n_clients // 2), max(1, n_clients // 4))
        values = tuple(v or d for v, d in zip((self.min_available, self.min_train, self.min_evaluate), derived))
        for name, v in zip(("min_available", "min_train", "min_evaluate"), values):
            if v > n_clients:
                raise ConfigError(f"federated.{name}={v} exceeds the {n_clients} clients of the partition; "
                                  "the round would wait forever")
        return values  # type: ignore[return-value]

    def strategy_args(self, n_clients: int) -> dict:
        """:func:`fedicd.strategies.build_strategy`'s keywords for a partition of ``n_clients`` clients."""
        return strategy_args(self, n_clients)
