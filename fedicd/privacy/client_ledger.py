"""The client-level DP ledger: every noised release of a run, accounted by RDP and PLD.

:class:`ClientLedger` speaks Flower's ``PrivacyAccountant`` protocol (``compose``, ``num_releases``,
``get_epsilon``, ``would_exceed``, ``state_dict``…), so Flower's fixed-clipping wrappers keep their own
checks (uniform weights, the cohort size, the budget before each release) while the ε comes from
:mod:`fedicd.privacy.accountants` (``level="client"``): the selected accountant enforces the budget and
:meth:`ClientLedger.epsilons` gives both. Releases are kept as ``(σ, q, count)`` events; ``q`` is the
Poisson client-sampling rate (``sample_size / population_size``) when the ledger's sampling method is
Poisson, else 1 (no amplification credited).
"""

from __future__ import annotations

from flwr.supercore.privacy_accounting import (GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig,
                                               PrivacySpent, SamplingMethod)

from fedicd.privacy import accountants

__all__ = ["ClientLedger", "ledger_config"]

_SCHEMA = 1


def ledger_config(population: int, delta: float, *, poisson: bool, max_epsilon: float | None = None) -> PrivacyConfig:
    """Flower's accounting config of a client-level run (add-or-remove-one neighbours)."""
    return PrivacyConfig(target_delta=delta, population_size=population,
                         neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                         sampling_method=SamplingMethod.POISSON if poisson else SamplingMethod.NO_AMPLIFICATION,
                         max_epsilon=max_epsilon)


class ClientLedger:
    """The releases of a client-level run and their ε under ``accountant`` ("rdp" or "pld").

    Parameters
    ----------
    config : flwr PrivacyConfig
        Population, δ, sampling method (Poisson: amplification credited) and the optional budget
        ``max_epsilon`` that :meth:`would_exceed` enforces with the selected accountant.
    accountant : str
        The accountant that enforces the budget and :meth:`get_epsilon` reports.
    """

    def __init__(self, config: PrivacyConfig, accountant: str = "rdp") -> None:
        if accountant not in accountants.ACCOUNTANTS:
            raise ValueError(f"privacy.accountant must be one of {list(accountants.ACCOUNTANTS)}, got {accountant!r}")
        self._config, self.accountant = config, accountant
        self.events: list[tuple[float, float, int]] = []
        self._cache: dict[tuple, float] = {}

    @property
    def config(self) -> PrivacyConfig:
        return self._config

    @property
    def poisson(self) -> bool:
        return self._config.sampling_method is SamplingMethod.POISSON

    @property
    def num_releases(self) -> int:
        return sum(count for *_, count in self.events)

    def rate(self, event: GaussianPrivacyEvent) -> float:
        """The sampling rate credited to ``event``: ``sample_size / population`` under Poisson, else 1."""
        if event.population_size != self._config.population_size:
            raise ValueError(f"privacy event population_size {event.population_size} != the run's "
                             f"{self._config.population_size}")
        return event.sample_size / event.population_size if self.poisson else 1.0

    def compose(self, event: GaussianPrivacyEvent, count: int = 1) -> None:
        """Record ``count`` releases of ``event`` (consecutive equal events are merged)."""
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        self.add(event.noise_multiplier, self.rate(event), count)

    def add(self, sigma: float, q: float, count: int = 1) -> None:
        """Record ``count`` releases of noise multiplier ``sigma`` at sampling rate ``q``."""
        self.events = self._with(sigma, q, count)

    def _with(self, sigma: float, q: float, count: int) -> list[tuple[float, float, int]]:
        """The events after ``count`` more releases of ``(sigma, q)`` (merged into the last when equal)."""
        if q < 1 and not self.poisson:
            raise ValueError(f"a release at client sampling rate q={q} claims amplification, but this run samples "
                             "clients with Flower's fixed-size sampler (no amplification): set "
                             "privacy.client_sampling = 'poisson' to have it credited")
        (sigma, q, count), = accountants.check_events([(sigma, q, count)])
        if self.events and self.events[-1][:2] == (sigma, q):
            return [*self.events[:-1], (sigma, q, self.events[-1][2] + count)]
        return [*self.events, (sigma, q, count)]

    def _epsilon(self, events: list, delta: float, name: str) -> float:
        key = (tuple(events), delta, name)
        if key not in self._cache:
            self._cache[key] = accountants.epsilon(events, delta, name, level="client")
        return self._cache[key]

    def epsilons(self, delta: float | None = None) -> dict[str, float]:
        """``{"rdp": ε, "pld": ε}`` of the releases so far at ``delta`` (the run's by default)."""
        delta = self._config.target_delta if delta is None else delta
        return {name: self._epsilon(self.events, delta, name) for name in accountants.ACCOUNTANTS}

    def epsilon_after(self, sigma: float, q: float, count: int = 1) -> float:
        """ε (selected accountant, run's δ) if ``count`` more releases of ``(sigma, q)`` were made."""
        return self._epsilon(self._with(sigma, q, count), self._config.target_delta, self.accountant)

    def get_epsilon(self, delta: float) -> float:
        """ε at ``delta`` under the selected accountant."""
        return self._epsilon(self.events, delta, self.accountant)

    def get_delta(self, epsilon: float) -> float:
        raise NotImplementedError("fedicd reports ε at the run's δ; ask get_epsilon")

    def get_privacy_spent(self, delta: float | None = None) -> PrivacySpent:
        delta = self._config.target_delta if delta is None else delta
        return PrivacySpent(epsilon=self.get_epsilon(delta), delta=delta, num_releases=self.num_releases,
                            accounting_method=self.accountant)

    def would_exceed(self, event: GaussianPrivacyEvent, max_epsilon: float | None = None, count: int = 1) -> bool:
        """Whether ``count`` more releases of ``event`` would spend more than the budget (selected accountant)."""
        limit = self._config.max_epsilon if max_epsilon is None else max_epsilon
        if limit is None:
            raise ValueError("max_epsilon must be given in the config or to would_exceed()")
        after = self._with(event.noise_multiplier, self.rate(event), count)
        return self._epsilon(after, self._config.target_delta, self.accountant) > limit

    def state_dict(self) -> dict[str, object]:
        c = self._config
        return {"schema_version": _SCHEMA, "backend": "fedicd-ledger", "accountant": self.accountant,
                "config": {"target_delta": c.target_delta, "population_size": c.population_size,
                           "sampling_method": c.sampling_method.value, "max_epsilon": c.max_epsilon},
                "events": [list(e) for e in self.events]}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict`'s output; refused when it belongs to another run's settings."""
        if state.get("backend") != "fedicd-ledger" or state.get("schema_version") != _SCHEMA:
            raise ValueError("the checkpoint's client-level DP accountant state was written by another fedicd "
                             "version; stage the run again")
        mine = self.state_dict()
        for key in ("accountant", "config"):
            if state.get(key) != mine[key]:
                raise ValueError(f"the checkpoint's client-level DP {key} {state.get(key)!r} differs from this "
                                 f"run's {mine[key]!r}")
        self.events = [tuple(e) for e in accountants.check_events(state["events"])]  # type: ignore[arg-type]
