"""Use a fedicd partition where Flower Datasets expects a ``Partitioner``.

Requires ``flwr-datasets`` (``pip install flwr-datasets``; in the dev extra)::

    fds_partitioner = FedicdPartitioner(partition)
    fds_partitioner.dataset = hf_dataset          # rows in the same order as the partitioned notes
    client_0 = fds_partitioner.load_partition(0)  # datasets.Dataset with client 0's rows
"""

from __future__ import annotations

from fedicd.partition.base import Partition, PartitionError

try:
    from flwr_datasets.partitioner import Partitioner as _FlowerPartitioner
except ImportError as exc:  # pragma: no cover - exercised only without flwr-datasets
    raise ImportError("fedicd.partition.flwr_adapter needs flwr-datasets: pip install flwr-datasets") from exc

__all__ = ["FedicdPartitioner"]


class FedicdPartitioner(_FlowerPartitioner):
    """A Flower Datasets partitioner that serves a precomputed fedicd :class:`Partition`."""

    def __init__(self, partition: Partition) -> None:
        super().__init__()
        self._partition = partition

    @property
    def num_partitions(self) -> int:
        return self._partition.n_clients

    def load_partition(self, partition_id: int):
        if not 0 <= partition_id < self.num_partitions:
            raise PartitionError(f"partition_id must be in [0, {self.num_partitions}), got {partition_id}")
        covered = sum(self._partition.sizes) + len(self._partition.dropped)
        if len(self.dataset) != covered:
            raise PartitionError(f"the dataset has {len(self.dataset)} rows but the partition covers {covered}")
        return self.dataset.select(self._partition.clients[partition_id].tolist())
