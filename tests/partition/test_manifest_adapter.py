import json

import numpy as np
import pytest

from fedicd.partition import PartitionError, dirichlet_partition, read_manifest, write_manifest


def test_manifest_round_trip(tmp_path):
    labels = [("A",), ("B",), ("A", "B"), ("C",)] * 10
    p = dirichlet_partition(labels, 4, alpha=0.5, seed=3, min_partition_size=1)
    ids = [f"n{i}" for i in range(40)]
    write_manifest(p, tmp_path / "m.json", n_notes=40, note_ids=ids, extra={"stats": {"x": 1}})
    back, doc = read_manifest(tmp_path / "m.json")
    assert all(np.array_equal(a, b) for a, b in zip(p.clients, back.clients))
    assert (back.scheme, back.params, back.seed, back.names) == (p.scheme, p.params, p.seed, p.names)
    assert doc["clients"][0]["note_ids"] == [ids[i] for i in p.clients[0]] and doc["stats"] == {"x": 1}


def test_manifest_that_does_not_cover_notes_is_rejected(tmp_path):
    p = dirichlet_partition([("A",)] * 6, 2, alpha=1.0, seed=0, min_partition_size=0)
    path = write_manifest(p, tmp_path / "m.json", n_notes=6)
    doc = json.loads(path.read_text())
    doc["clients"][0]["indices"] = doc["clients"][0]["indices"][1:]
    path.write_text(json.dumps(doc))
    with pytest.raises(PartitionError, match="do not cover the 6 notes exactly once"):
        read_manifest(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(PartitionError, match="not a fedicd partition manifest"):
        read_manifest(path)


def test_flower_datasets_adapter_serves_client_rows():
    datasets = pytest.importorskip("datasets", reason="flwr-datasets (dev extra) is not installed")
    from fedicd.partition.flwr_adapter import FedicdPartitioner

    labels = [("A",), ("B",), ("A", "B")] * 5
    p = dirichlet_partition(labels, 3, alpha=0.5, seed=1, min_partition_size=1)
    adapter = FedicdPartitioner(p)
    adapter.dataset = datasets.Dataset.from_dict({"row": list(range(15))})
    assert adapter.num_partitions == 3
    for k in range(3):
        assert adapter.load_partition(k)["row"] == p.clients[k].tolist()
    with pytest.raises(PartitionError, match=r"partition_id must be in \[0, 3\)"):
        adapter.load_partition(3)
