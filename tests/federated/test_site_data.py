"""Per-role site files of a staged run (fedicd.federated.site_data): round trips, named errors, what staging writes,
the researcher's reassembly, and which files the server and each client open in an in-process federated run."""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.config import config_from_dict
from fedicd.data.labels import fit_binarizer, save_binarizer
from fedicd.federated.data import stage_arrays
from fedicd.federated.site_data import (ClientData, LabelSpaceMismatchError, SiteDataError, client_data_path,
                                        read_client_data, read_server_eval, server_eval_path, write_client_data)
from fedicd.federated.staged import check_staged_features, load_server_data, load_staged_splits
from fedicd.partition import iid_partition
from fedicd.sequences import ChunkSequences, ChunksMissingError

CODES = ["A01", "B02", "C03", "D04", "E05"]
DIM = 6


def _rng_rows(rng, n: int, dim: int, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    return (rng.normal(size=(n, dim)).astype(np.float32),
            (rng.random((n, n_labels)) < 0.4).astype(np.float32))


# --------------------------------------------------------------------------------------------- round trips
@settings(max_examples=25, deadline=None)
@given(n_train=st.integers(1, 7), n_val=st.integers(0, 5), dim=st.integers(1, 6), n_labels=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_pooled_client_rows_round_trip(n_train, n_val, dim, n_labels, seed) -> None:
    rng = np.random.default_rng(seed)
    (xt, yt), (xv, yv) = _rng_rows(rng, n_train, dim, n_labels), _rng_rows(rng, n_val, dim, n_labels)
    codes = [f"c{i}" for i in range(n_labels)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clients" / "0" / "data.npz"
        write_client_data(path, ClientData(xt, yt, xv, yv), codes)
        back = read_client_data(path, labels=codes, input_dim=dim, head="mlp")
        assert sorted(p.name for p in path.parent.iterdir()) == ["data.npz"]  # no temporary file left
    for got, want in ((back.x_train, xt), (back.y_train, yt), (back.x_val, xv), (back.y_val, yv)):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@settings(max_examples=25, deadline=None)
@given(train=st.lists(st.integers(1, 4), min_size=1, max_size=6), val=st.lists(st.integers(1, 4), max_size=4),
       dim=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_chunk_sequence_client_rows_round_trip(train, val, dim, seed) -> None:
    rng = np.random.default_rng(seed)

    def seqs(lengths):
        if not lengths:  # a client without validation notes: zero notes, zero chunks
            return ChunkSequences(np.zeros((0, dim), np.float32), np.zeros(1, np.int64))
        return ChunkSequences.from_lists([rng.normal(size=(n, dim)) for n in lengths])

    xt, xv = seqs(train), seqs(val)
    yt = (rng.random((len(train), 3)) < 0.5).astype(np.float32)
    yv = (rng.random((len(val), 3)) < 0.5).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        write_client_data(path, ClientData(xt, yt, xv, yv), ["a", "b", "c"])
        back = read_client_data(path, input_dim=dim)
    for got, want in ((back.x_train, xt), (back.x_val, xv)):
        assert isinstance(got, ChunkSequences)
        np.testing.assert_array_equal(got.chunks, want.chunks)
        np.testing.assert_array_equal(got.offsets, want.offsets)
    np.testing.assert_array_equal(back.y_train, yt)
    np.testing.assert_array_equal(back.y_val, yv)


def test_a_cached_read_gives_fresh_copies_and_sees_a_rewritten_file(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    write_client_data(path, ClientData(*_rng_rows(rng, 4, 3, 2), *_rng_rows(rng, 2, 3, 2)), ["a", "b"])
    first = read_client_data(path)
    first.x_train[:] = 99.0  # a trainer changing its rows in place does not change the next round's
    assert not (read_client_data(path).x_train == 99.0).any()
    write_client_data(path, ClientData(*_rng_rows(rng, 5, 3, 2), *_rng_rows(rng, 2, 3, 2)), ["a", "b"])
    assert len(read_client_data(path).x_train) == 5


# --------------------------------------------------------------------------------------------- named errors
def _good(tmp_path: Path, **replace) -> Path:
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.normal(size=(4, DIM)).astype(np.float32), "y_train": np.eye(4, 5, dtype=np.float32),
              "x_val": rng.normal(size=(2, DIM)).astype(np.float32), "y_val": np.eye(2, 5, dtype=np.float32),
              "labels": np.asarray(CODES)}
    arrays.update(replace)
    path = tmp_path / "site.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_a_missing_file_names_the_path_and_what_writes_it(tmp_path) -> None:
    path = tmp_path / "clients" / "7" / "data.npz"
    with pytest.raises(SiteDataError, match=rf"site data file not found: {path} \(staging writes it .*data-path"):
        read_client_data(path)


def test_a_missing_key_is_named_with_what_the_file_holds(tmp_path) -> None:
    with pytest.raises(SiteDataError, match=r"site.npz lacks \['y_val'\] \(it holds \['labels', 'x_train', 'x_val', "
                                            r"'y_train'\]"):
        read_client_data(_good(tmp_path, y_val=None))


def test_nan_or_inf_features_are_refused_with_the_rows(tmp_path) -> None:
    x = np.zeros((4, DIM), np.float32)
    x[1, 2], x[3, 0] = np.nan, np.inf
    with pytest.raises(SiteDataError, match=r"site.npz: x_train holds NaN or infinite values \(2 rows\)"):
        read_client_data(_good(tmp_path, x_train=x))
    chunks = ChunkSequences.from_lists([np.ones((2, DIM))]).to_arrays("x_val")
    chunks["x_val"][1, 0] = np.nan
    with pytest.raises(SiteDataError, match=r"x_val is not valid chunk sequences"):
        read_client_data(_good(tmp_path, y_val=np.eye(1, 5, dtype=np.float32), **chunks))


def test_row_counts_labels_and_dimensions_must_agree(tmp_path) -> None:
    with pytest.raises(SiteDataError, match=r"x_train has 4 notes but y_train has 3 rows"):
        read_client_data(_good(tmp_path, y_train=np.eye(3, 5, dtype=np.float32)))
    with pytest.raises(SiteDataError, match=r"y_val must be \[notes, 5\] \(one column per label code\), got shape "
                                            r"\(2, 4\)"):
        read_client_data(_good(tmp_path, y_val=np.eye(2, 4, dtype=np.float32)))
    with pytest.raises(SiteDataError, match=r"y_train must hold 0/1 labels, got values such as \[0.5\]"):
        read_client_data(_good(tmp_path, y_train=np.full((4, 5), 0.5, np.float32)))
    with pytest.raises(SiteDataError, match=rf"site.npz holds {DIM}-dimensional features but the run's model reads "
                                            r"input_dim = 384"):
        read_client_data(_good(tmp_path), input_dim=384)
    with pytest.raises(SiteDataError, match=r"holds no training rows"):
        read_client_data(_good(tmp_path, x_train=np.zeros((0, DIM), np.float32),
                               y_train=np.zeros((0, 5), np.float32)))
    with pytest.raises(ChunksMissingError, match=r"the site data .*site.npz"):
        read_client_data(_good(tmp_path), head="multires_cnn")


def test_another_label_space_is_refused_listing_the_differing_codes(tmp_path) -> None:
    path = _good(tmp_path)
    run = ["A01", "B02", "C03", "X99", "E05", "Z00"]
    with pytest.raises(LabelSpaceMismatchError, match=r"site.npz was made for another label space than the run's: "
                                                      r"the run has 6 label codes, the file 5; codes missing from the "
                                                      r"file: \['X99', 'Z00'\]; codes the run does not have: "
                                                      r"\['D04'\] \(make the site's file again"):
        read_client_data(path, labels=run)
    swapped = ["A01", "C03", "B02", "D04", "E05"]
    with pytest.raises(LabelSpaceMismatchError, match=r"same codes in another order, first differing at position 1: "
                                                      r"run 'C03', file 'B02'"):
        read_client_data(path, labels=swapped)
    assert issubclass(LabelSpaceMismatchError, SiteDataError) and issubclass(SiteDataError, ValueError)
    read_client_data(path, labels=CODES)


# --------------------------------------------------------------------------------------------- staging
SIZES = {"train": 30, "val": 12, "test": 9}


def _arrays(seed: int = 0, sequences: bool = False):
    rng = np.random.default_rng(seed)
    if sequences:
        feats = {p: ChunkSequences.from_lists([rng.normal(size=(int(rng.integers(1, 4)), DIM)) for _ in range(n)])
                 for p, n in SIZES.items()}
    else:
        feats = {p: rng.normal(size=(n, DIM)).astype(np.float32) for p, n in SIZES.items()}
    labels = {p: (rng.random((n, len(CODES))) < 0.4).astype(np.float32) for p, n in SIZES.items()}
    return feats, labels


def _stage(run: Path, n_clients: int = 3, seed: int = 0, sequences: bool = False, **kwargs):
    feats, labels = _arrays(seed, sequences)
    mlb = fit_binarizer([CODES])
    stage_arrays(run, feats, labels, iid_partition([()] * SIZES["train"], n_clients, seed=seed),
                 iid_partition([()] * SIZES["val"], n_clients, seed=seed + 1), label_codes=mlb.classes_, **kwargs)
    save_binarizer(mlb, run / "labels.json")
    return feats, labels


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def test_staging_writes_one_file_per_role_and_no_pooled_features_file(tmp_path) -> None:
    feats, labels = _stage(tmp_path / "a")
    assert _files(tmp_path / "a") == {"partition.json", "partition_val.json", "labels.json", "server/eval.npz",
                                      "clients/0/data.npz", "clients/1/data.npz", "clients/2/data.npz"}
    server = load_server_data(tmp_path / "a")
    np.testing.assert_array_equal(server["x_test"], feats["test"])
    np.testing.assert_array_equal(server["y_val"], labels["val"])
    np.testing.assert_array_equal(server["train_label_counts"], labels["train"].sum(axis=0).astype(np.int64))
    assert server["train_label_counts"].dtype == np.int64 and server["labels"] == tuple(CODES)
    _stage(tmp_path / "b", server_eval=False)
    assert "server/eval.npz" not in _files(tmp_path / "b") and not (tmp_path / "b" / "server").exists()
    assert load_server_data(tmp_path / "b") is None
    check_staged_features(tmp_path / "b", "mlp", server_eval=False)  # opens nothing: each client checks its own
    with pytest.raises(SiteDataError, match=r"federated.server_eval = true but .*server/eval.npz does not exist"):
        check_staged_features(tmp_path / "b", "mlp")


def test_restaging_removes_the_earlier_site_files_and_a_legacy_features_file(tmp_path) -> None:
    run = tmp_path / "run"
    _stage(run, n_clients=4)
    (run / "data").mkdir()
    (run / "data" / "features.npz").write_bytes(b"old")
    _stage(run, n_clients=2, server_eval=False)
    assert _files(run) == {"partition.json", "partition_val.json", "labels.json", "clients/0/data.npz",
                           "clients/1/data.npz"}


@settings(max_examples=10, deadline=None)
@given(n_clients=st.integers(1, 6), seed=st.integers(0, 1000), sequences=st.booleans())
def test_the_clients_train_rows_are_the_training_split_exactly_once(n_clients, seed, sequences) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        feats, labels = _stage(run, n_clients=n_clients, seed=seed, sequences=sequences)
        partition = iid_partition([()] * SIZES["train"], n_clients, seed=seed)
        rows = np.concatenate(partition.clients)
        assert sorted(rows.tolist()) == list(range(SIZES["train"]))  # no row lost or duplicated
        total = sum(len(read_client_data(client_data_path(run, k)).x_train) for k in range(n_clients))
        assert total == SIZES["train"]
        splits = load_staged_splits(run)
    if sequences:
        np.testing.assert_array_equal(splits["x_train"].chunks, feats["train"].chunks)
        np.testing.assert_array_equal(splits["x_train"].offsets, feats["train"].offsets)
    else:
        np.testing.assert_array_equal(splits["x_train"], feats["train"])
    np.testing.assert_array_equal(splits["y_train"], labels["train"])
    assert [c.tolist() for c in splits["clients"]] == [c.tolist() for c in partition.clients]
    assert splits["labels"] == tuple(CODES) and len(splits["x_test"]) == SIZES["test"]


# --------------------------------------------------------------------------------------------- in-process runs
class OpenRecorder:
    """Every path opened while recording, with the role of the code that opened it: "client" (a ClientApp
    handler on the stack, with its partition id), "server" (the round loop or the results writer on the stack,
    no client handler), or "other". ``sys.addaudithook`` cannot be removed: one hook per process, switched on
    and off here."""

    active: OpenRecorder | None = None
    installed = False

    def __init__(self) -> None:
        self.opens: list[tuple[str, int | None, str]] = []
        self.thread = threading.get_ident()

    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        rec = cls.active
        if rec is None or event != "open" or not isinstance(args[0], (str, bytes, Path)):
            return
        try:
            rec.opens.append(rec._classify(str(args[0] if not isinstance(args[0], bytes) else args[0].decode())))
        except Exception:  # an audit hook must never break the open it watches
            pass

    def _classify(self, path: str) -> tuple[str, int | None, str]:
        frame, server = sys._getframe(2), False
        while frame is not None:
            name = frame.f_code.co_filename.replace("\\", "/")
            if name.endswith("fedicd/federated/client_handlers.py") and "setup" in frame.f_locals:
                return "client", int(frame.f_locals["setup"].pid), path
            server = server or name.endswith(("fedicd/federated/server.py", "fedicd/runner/results.py"))
            frame = frame.f_back
        return ("server" if server else "other"), None, path

    def __enter__(self) -> OpenRecorder:
        if not OpenRecorder.installed:
            sys.addaudithook(OpenRecorder._hook)
            OpenRecorder.installed = True
        OpenRecorder.active = self
        return self

    def __exit__(self, *exc) -> None:
        OpenRecorder.active = None

    def paths(self, role: str, pid: int | None = None) -> set[str]:
        return {p for r, k, p in self.opens if r == role and (pid is None or k == pid)}


def _plan(run: Path, rounds: int, **federated):
    from fedicd.run_plan import write_plan
    from fedicd.runner.staging import build_plan

    cfg = config_from_dict({"train": {"mode": "federated", "head": "mlp", "hidden": [8], "dropout": 0.0},
                            "federated": {"rounds": rounds, "engine": "inprocess", "fraction_evaluate": 1.0,
                                          **federated},
                            "partition": {"n_clients": 3}})
    # the sizes as staging knows them (reading the clients' files here would cache them before the recorder runs)
    sizes = iid_partition([()] * SIZES["train"], 3, seed=0).sizes
    plan = build_plan(cfg, input_dim=DIM, n_labels=len(CODES), client_sizes=sizes)
    write_plan(run, plan)
    return plan


def _is_client_data(path: str, run: Path) -> bool:
    return str(run / "clients") in path and path.endswith(".npz") and "scaffold" not in path


def test_the_server_never_opens_client_data_or_manifests_and_each_client_only_its_own(tmp_path, monkeypatch) -> None:
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.runner.results import finalize
    from fedicd.runner.simulation import simulate

    monkeypatch.setattr("fedicd.plots.plot_learning_curves", lambda *args, **kwargs: None)
    run = tmp_path / "run"
    _stage(run)
    plan = _plan(run, rounds=2)
    with OpenRecorder() as rec:
        seconds = simulate(run, plan, verbose=False)
        results = finalize("audit", run, plan, load_checkpoint(run), seconds)
    assert results["outcome"]["status"] == "ok" and results["evaluation"] == {"by": "server"}
    server = rec.paths("server")
    assert str(server_eval_path(run)) in server  # the hook sees the server's reads
    assert not [p for p in server if str(run / "clients") in p or "partition" in Path(p).name], server
    for pid in range(3):
        opened = {p for p in rec.paths("client", pid) if str(run) in p}
        assert {p for p in opened if _is_client_data(p, run)} == {str(client_data_path(run, pid))}
        assert not [p for p in opened if "partition" in Path(p).name or "server" in Path(p).parts], opened
    assert not [p for p in rec.paths("other") if "partition" in Path(p).name or _is_client_data(p, run)]


def test_the_open_recorder_catches_a_server_that_reads_client_data(tmp_path, monkeypatch) -> None:
    """The negative control: a round loop that reassembled the training split would be seen."""
    import fedicd.federated.server as server_module
    from fedicd.runner.simulation import simulate

    run = tmp_path / "run"
    _stage(run)
    plan = _plan(run, rounds=1)
    honest = server_module.load_server_data

    def leaky(rd):
        load_staged_splits(rd)  # opens partition.json (the clients' files are cached in-process by then)
        np.load(client_data_path(rd, 1)).close()
        return honest(rd)

    monkeypatch.setattr(server_module, "load_server_data", leaky)
    with OpenRecorder() as rec:
        simulate(run, plan, verbose=False)
    assert {str(run / "partition.json"), str(client_data_path(run, 1))} <= rec.paths("server")


def test_without_server_evaluation_the_run_completes_on_client_scores_only(tmp_path, monkeypatch) -> None:
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.runner.results import finalize
    from fedicd.runner.simulation import simulate

    plotted = []
    monkeypatch.setattr("fedicd.plots.plot_learning_curves", lambda history, *args, **kwargs: plotted.append(history))
    run = tmp_path / "run"
    _stage(run, server_eval=False)
    plan = _plan(run, rounds=2, server_eval=False)
    seconds = simulate(run, plan, verbose=False)
    history = load_checkpoint(run)["history"]
    assert [row["round"] for row in history] == [1, 2]
    for row in history:
        assert not {"val_loss", "test_loss", "test_micro_f1", "threshold"} & set(row)
        assert np.isfinite(row["client_eval_loss"]) and 0.0 <= row["client_micro_f1"] <= 1.0
    results = finalize("clients-only", run, plan, load_checkpoint(run), seconds)
    assert results["outcome"]["status"] == "ok" and "val" not in results and "test" not in results
    assert results["evaluation"]["by"] == "clients" and results["evaluation"]["round"] == 2
    assert results["client_evaluation"]["eval_loss"] == history[-1]["client_eval_loss"]
    saved = json.loads((run / "results.json").read_text())
    assert saved["client_evaluation"]["micro_f1"] == history[-1]["client_micro_f1"]
    assert (run / "history.csv").exists() and not (run / "server").exists() and plotted == [history]


def test_a_client_of_another_label_space_fails_its_rounds_by_name(tmp_path) -> None:
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.runner.simulation import simulate

    run = tmp_path / "run"
    _stage(run)
    save_binarizer(fit_binarizer([["A01", "B02", "C03", "D04", "Q77"]]), run / "labels.json")
    plan = _plan(run, rounds=1)
    simulate(run, plan, verbose=False)
    ckpt = load_checkpoint(run)
    assert ckpt["history"][0]["client_failures"] == 3 and not ckpt["history"][0]["updated"]
    assert all("LabelSpaceMismatchError" in r["reason"] and "Q77" in r["reason"] for r in ckpt["rejections"])


def test_read_server_eval_checks_the_run_label_space(tmp_path) -> None:
    _stage(tmp_path)
    with pytest.raises(LabelSpaceMismatchError, match=r"eval.npz was made for another label space"):
        read_server_eval(server_eval_path(tmp_path), labels=CODES[::-1])
