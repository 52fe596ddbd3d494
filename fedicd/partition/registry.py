"""The partitioners by name: one registry for :func:`fedicd.partition.config.make_partition`, tests and users.

A :class:`PartitionerSpec` holds the scheme's function, ``partition(labels,
[n_clients,] *, seed, min_partition_size, **options)``, and how ``[partition]``
settings become its options. Adding a scheme: its module plus one
:func:`register_partitioner` call (here, for a built-in); options of its own
also need :class:`fedicd.partition.config.PartitionConfig` fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fedicd.partition.base import Codes, Partition
from fedicd.partition.dirichlet import dirichlet_partition
from fedicd.partition.iid import iid_partition
from fedicd.partition.natural import natural_partition
from fedicd.partition.quantity import quantity_partition

__all__ = ["PARTITIONERS", "PartitionerSpec", "register_partitioner", "unregister_partitioner", "get_partitioner",
           "partitioner_spec", "partitioner_names", "run_partitioner"]


def _no_options(_: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class PartitionerSpec:
    """A registered partitioner.

    Attributes
    ----------
    name : str
        ``partition.scheme``.
    partition : callable
        The scheme's function.
    options : callable
        ``options(partition_config) -> dict`` of the function's scheme-specific keywords.
    by_sites : bool
        One client per site: the function takes ``sites=`` instead of ``n_clients``.
    """

    name: str
    partition: Callable[..., Partition]
    options: Callable[[Any], dict[str, Any]] = _no_options
    by_sites: bool = False


_SPECS: dict[str, PartitionerSpec] = {}
_FUNCTIONS: dict[str, Callable[..., Partition]] = {}
PARTITIONERS: Mapping[str, Callable[..., Partition]] = MappingProxyType(_FUNCTIONS)
"""Registered partition functions by name (read-only view)."""


def register_partitioner(spec: PartitionerSpec, *, replace: bool = False) -> PartitionerSpec:
    if spec.name in _SPECS and not replace:
        raise ValueError(f"partitioner {spec.name!r} is already registered")
    _SPECS[spec.name], _FUNCTIONS[spec.name] = spec, spec.partition
    return spec


def unregister_partitioner(name: str) -> None:
    _SPECS.pop(name, None)
    _FUNCTIONS.pop(name, None)


def partitioner_names() -> tuple[str, ...]:
    return tuple(_SPECS)


def partitioner_spec(name: str) -> PartitionerSpec:
    if name not in _SPECS:
        raise ValueError(f"unknown partitioner {name!r}; choose one of {sorted(_SPECS)}")
    return _SPECS[name]


def get_partitioner(name: str) -> Callable[..., Partition]:
    """The partition function registered as ``name``."""
    return partitioner_spec(name).partition


def run_partitioner(cfg: Any, labels: Codes, *, seed: int, sites: Sequence[str] | None = None) -> Partition:
    """Run the partitioner ``cfg.scheme`` names with ``cfg``'s settings (``cfg``: a PartitionConfig)."""
    spec = partitioner_spec(cfg.scheme)
    common = {"seed": seed, "min_partition_size": cfg.min_partition_size, **spec.options(cfg)}
    if spec.by_sites:
        return spec.partition(labels, sites=sites, **common)
    return spec.partition(labels, cfg.n_clients, **common)


def _dirichlet_options(cfg: Any) -> dict[str, Any]:
    return {"alpha": cfg.alpha, "scheme": cfg.dirichlet_scheme, "balance": cfg.balance or None,
            "max_retries": cfg.max_retries, "unlabelled": cfg.unlabelled}


def _quantity_options(cfg: Any) -> dict[str, Any]:
    return {"distribution": cfg.distribution, "beta": cfg.beta, "sigma": cfg.sigma}


for _spec in (PartitionerSpec("iid", iid_partition),
              PartitionerSpec("dirichlet", dirichlet_partition, _dirichlet_options),
              PartitionerSpec("quantity", quantity_partition, _quantity_options),
              PartitionerSpec("natural", natural_partition, by_sites=True)):
    register_partitioner(_spec)
