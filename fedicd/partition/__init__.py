"""Partitioners of coded notes into federated clients, property-tested.

Schemes (names in :mod:`fedicd.partition.registry`, the one registry
``make_partition`` and the tests use): ``iid``, ``dirichlet`` (multi-label
mixture or primary-label label skew), ``quantity`` (size skew), ``natural`` (one
client per site). Each takes the notes' code lists and returns a :class:`Partition`;
:func:`partition_stats`, :func:`check_feasibility` and the manifest helpers
work on any of them. :func:`validation_partition` shares the validation notes
among the clients (``partition.client_validation``); the rules that
``fedicd partition`` and a federated ``fedicd run`` both apply live in
:mod:`fedicd.partition.rules`. This package works on codes, sites and seeds
only; preparing an experiment's notes for it is :mod:`fedicd.partition_run`'s job.
"""

from __future__ import annotations

from fedicd.partition.base import Partition, PartitionError
from fedicd.partition.dirichlet import dirichlet_partition
from fedicd.partition.feasibility import FeasibilityReport, check_feasibility, drop_infeasible_codes
from fedicd.partition.iid import iid_partition
from fedicd.partition.manifest import read_manifest, write_manifest
from fedicd.partition.natural import natural_partition
from fedicd.partition.quantity import quantity_partition
from fedicd.partition.registry import (PARTITIONERS, PartitionerSpec, get_partitioner, partitioner_names,
                                       register_partitioner)
from fedicd.partition.stats import PartitionStats, partition_stats
from fedicd.partition.validation import CLIENT_VALIDATION, validation_partition

__all__ = ["Partition", "PartitionError", "PARTITIONERS", "PartitionerSpec", "get_partitioner", "partitioner_names",
           "register_partitioner", "iid_partition",
           "dirichlet_partition", "quantity_partition", "natural_partition", "partition_stats", "PartitionStats",
           "check_feasibility", "drop_infeasible_codes", "FeasibilityReport", "write_manifest",
           "read_manifest", "validation_partition", "CLIENT_VALIDATION"]
