"""A SuperNode's data (fedicd.deploy.node_data): node config parsing and its named errors, the notes format, notes
embedded locally with the study's encoder settings and scaler (a fake encoder: no model is loaded), cached."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from fedicd.deploy.node_data import (EMBEDDED_DATA, LabelSpaceMismatchError, NodeConfigError, NotesFormatError,
                                     embed_notes, node_data_path, parse_node_config, read_notes)
from fedicd.federated.site_data import SiteDataError, client_data_path, read_client_data
from fedicd.run_plan import PrivacyPlan, read_plan
from tests.deploy.test_study import LABELS, stage_run
from tests.embedding.fakes import ENGLISH, FakeEncoder

NOTES = [{"text": ENGLISH[i], "codes": codes, "split": split} for i, (codes, split) in enumerate([
    (["A01", "C03"], "train"), (["B02.1"], "train"), (["E05", "Z99"], "train"), ([], "train"),
    (["D04", "A01"], "val"), (["Z99", "Y98"], "val")])]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def run(tmp_path: Path) -> Path:
    stage_run(tmp_path / "run")
    return tmp_path / "run"


def _scaler(run: Path) -> dict:
    with np.load(run / "scaler.npz") as z:
        return {"mean": z["mean"].tolist(), "scale": z["scale"].tolist()}


# --- node config --------------------------------------------------------------------------------------------
def test_missing_keys_list_what_the_node_got_and_show_an_example() -> None:
    with pytest.raises(NodeConfigError) as err:
        parse_node_config({"partition-id": 0, "num-partitions": 3})
    msg = str(err.value)
    assert "lacks data-path (it holds the keys ['num-partitions', 'partition-id'])" in msg
    assert """--node-config 'partition-id=0 data-path="/site/notes.jsonl"'""" in msg
    with pytest.raises(NodeConfigError, match=r"lacks partition-id and data-path \(it holds the keys none\)"):
        parse_node_config({})
    with pytest.raises(NodeConfigError, match="lacks data-path"):
        parse_node_config({"partition-id": 1, "data-path": ""})


@pytest.mark.parametrize("pid", ["one", -1, True, 1.5])
def test_a_partition_id_that_is_not_an_index_is_refused(pid, tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "notes.jsonl", NOTES)
    with pytest.raises(NodeConfigError, match=r"partition-id = .*: give the site's client index, an integer >= 0"):
        parse_node_config({"partition-id": pid, "data-path": str(data)})


def test_data_path_not_found_or_of_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match=r"data-path = '.*nowhere.npz' is not a file on this node"):
        parse_node_config({"partition-id": 0, "data-path": str(tmp_path / "nowhere.npz")})
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(NodeConfigError, match=r"has the unknown format '.txt': give a client data.npz .* .jsonl or .csv"):
        parse_node_config({"partition-id": 0, "data-path": str(tmp_path / "notes.txt")})


def test_settings_and_the_default_state_dir(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "notes.jsonl", NOTES)
    s = parse_node_config({"partition-id": "2", "data-path": str(data), "model-path": "/models/minilm",
                           "ckks-secret-key": ""})
    assert (s.partition_id, s.data_path, s.state_dir, s.model_path, s.ckks_secret_key) == (
        2, data, tmp_path / "fedicd-state-2", "/models/minilm", None)
    assert parse_node_config({"partition-id": 0, "data-path": str(data), "state-dir": str(tmp_path / "s")}
                             ).state_dir == tmp_path / "s"


# --- a client data.npz --------------------------------------------------------------------------------------
def test_a_client_file_is_used_as_it_is(run: Path) -> None:
    plan, path = read_plan(run), client_data_path(run, 1)
    settings = parse_node_config({"partition-id": 1, "data-path": str(path)})
    assert node_data_path(settings, plan, LABELS) == path


def test_a_client_file_of_another_label_space_or_dimension_is_refused(run: Path) -> None:
    plan = read_plan(run)
    settings = parse_node_config({"partition-id": 0, "data-path": str(client_data_path(run, 0))})
    with pytest.raises(LabelSpaceMismatchError, match=r"codes missing from the file: \['F06'\]"):
        node_data_path(settings, plan, (*LABELS[:-1], "F06"))
    with pytest.raises(SiteDataError, match="holds 8-dimensional features but the run's model reads input_dim = 9"):
        node_data_path(settings, dataclasses.replace(plan, input_dim=9), LABELS)
    with pytest.raises(NodeConfigError, match=r"partition-id = 3 is outside the study's 3 clients \(0..2\)"):
        node_data_path(dataclasses.replace(settings, partition_id=3), plan, LABELS)


def test_notes_without_the_run_configs_scaler_are_refused(run: Path, tmp_path: Path) -> None:
    settings = parse_node_config({"partition-id": 0, "data-path": str(_jsonl(tmp_path / "n.jsonl", NOTES))})
    with pytest.raises(NodeConfigError, match="is a notes file, but the run config holds no scaler"):
        node_data_path(settings, read_plan(run), LABELS, scaler=None)


# --- the notes format ---------------------------------------------------------------------------------------
def test_jsonl_and_csv_notes_read_alike(tmp_path: Path) -> None:
    jsonl = read_notes(_jsonl(tmp_path / "n.jsonl", [{"text": "a b", "codes": ["A01", "C03"], "id": 7},
                                                     {"text": "c", "codes": [], "split": "val"}]))
    (tmp_path / "n.csv").write_text('text,codes,split\n"a b",A01; C03,train\nc,,val\n')
    assert read_notes(tmp_path / "n.csv") == jsonl
    assert jsonl.texts == ("a b", "c") and jsonl.codes == (("A01", "C03"), ()) and jsonl.splits == ("train", "val")


@pytest.mark.parametrize("line, message", [
    ('{"text": "  ", "codes": []}', r"line 2: 'text' is empty or missing"),
    ('{"text": "x", "codes": "A01"}', r"line 2: 'codes' = 'A01'; give a list of code strings"),
    ('{"text": "x", "codes": [], "split": "test"}', r"line 2: 'split' = 'test'; allowed: train, val"),
    ('{"text": "x", ', r"line 2: not JSON"),
    ('["x"]', r"line 2: a JSON list, expected an object")])
def test_a_bad_notes_line_is_named(line: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text(json.dumps(NOTES[0]) + "\n" + line + "\n")
    with pytest.raises(NotesFormatError, match=message):
        read_notes(path)


def test_notes_without_training_notes_or_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotesFormatError, match="holds 1 notes and none with split 'train'"):
        read_notes(_jsonl(tmp_path / "n.jsonl", [NOTES[4]]))
    with pytest.raises(NotesFormatError, match="holds 0 notes"):
        read_notes(_jsonl(tmp_path / "e.jsonl", []))
    (tmp_path / "n.csv").write_text("note,split\nx,train\n")
    with pytest.raises(NotesFormatError, match=r"the header lacks the column\(s\) \['text', 'codes'\]"):
        read_notes(tmp_path / "n.csv")


# --- notes embedded on the node -----------------------------------------------------------------------------
def _embed(run, tmp_path, fake_config, notes, encoder, **kw):
    return embed_notes(notes, tmp_path / "state" / EMBEDDED_DATA, plan=read_plan(run), pid=0, labels=LABELS,
                       scaler=_scaler(run), embedding=fake_config, cache_dir=tmp_path / "state" / "cache",
                       encoder=encoder, **kw)


def test_notes_become_a_client_file_scaled_and_binarized_as_the_study(run, tmp_path, fake_config, caplog) -> None:
    encoder = FakeEncoder(fake_config)
    notes = _jsonl(tmp_path / "notes.jsonl", NOTES)
    with caplog.at_level(logging.WARNING, logger="fedicd.deploy.node_data"):
        out = _embed(run, tmp_path, fake_config, notes, encoder)
    data = read_client_data(out, labels=LABELS, input_dim=8, head="mlp")
    from fedicd.embedding import embed_texts
    from fedicd.scaling import load_scaler

    raw = embed_texts([n["text"] for n in NOTES], fake_config, progress=False, encoder=FakeEncoder(fake_config)).vectors
    expected = load_scaler(run / "scaler.npz").transform(raw).astype(np.float32)
    np.testing.assert_array_equal(data.x_train, expected[:4])
    np.testing.assert_array_equal(data.x_val, expected[4:])
    np.testing.assert_array_equal(data.y_train, [[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(data.y_val, [[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    record = json.loads(out.with_name("made_from.json").read_text())
    assert record["codes"] == {"code_occurrences": 9, "outside_label_space": 3, "distinct_outside": 2,
                               "notes_without_study_codes": 2}
    assert record["notes"] == {"train": 4, "val": 2}
    assert "3 of 9 code occurrences (2 distinct codes, e.g. ['Y98', 'Z99']) are outside" in caplog.text
    # a later message (or a restart) reads the file: nothing is embedded again
    seen = encoder.chunks_seen
    assert _embed(run, tmp_path, fake_config, notes, encoder) == out and encoder.chunks_seen == seen
    # a changed notes file is embedded again (its new note only: the others come from the vector cache)
    _jsonl(notes, [*NOTES, {"text": ENGLISH[9], "codes": ["A01"]}])
    _embed(run, tmp_path, fake_config, notes, encoder)
    assert len(read_client_data(out).x_train) == 5 and encoder.chunks_seen > seen


def test_notes_whose_codes_share_nothing_with_the_study_are_refused(run, tmp_path, fake_config) -> None:
    notes = _jsonl(tmp_path / "n.jsonl", [{"text": ENGLISH[0], "codes": ["Q1", "Q2"]}])
    with pytest.raises(LabelSpaceMismatchError, match=r"none of its 2 distinct codes \(e.g. \['Q1', 'Q2'\]\) is in "
                                                      r"the study's label space of 5 codes"):
        _embed(run, tmp_path, fake_config, notes, FakeEncoder(fake_config))
    assert not (tmp_path / "state" / EMBEDDED_DATA).exists()


def test_notes_embedded_to_another_dimension_are_refused(run, tmp_path, fake_config) -> None:
    notes = _jsonl(tmp_path / "n.jsonl", NOTES)
    plan = dataclasses.replace(read_plan(run), input_dim=16)
    with pytest.raises(NodeConfigError, match="the encoder makes 8-dim vectors but the study's head reads 16"):
        embed_notes(notes, tmp_path / "out.npz", plan=plan, pid=0, labels=LABELS, scaler=_scaler(run),
                    embedding=fake_config, encoder=FakeEncoder(fake_config))
    scaler = {"mean": [0.0] * 4, "scale": [1.0] * 4}
    with pytest.raises(NodeConfigError, match="the run config's scaler has 4 means and 4 scales, but the encoder "
                                              "makes 8-dim vectors"):
        embed_notes(notes, tmp_path / "out.npz", plan=read_plan(run), pid=0, labels=LABELS, scaler=scaler,
                    embedding=fake_config, encoder=FakeEncoder(fake_config))


def test_a_chunk_sequence_head_is_refused_for_notes(run, tmp_path, fake_config) -> None:
    plan = read_plan(run)
    plan = dataclasses.replace(plan, train=dataclasses.replace(plan.train, head="label_attention", hidden=(16, 8)))
    with pytest.raises(NodeConfigError, match="train.head = 'label_attention' reads chunk sequences"):
        embed_notes(_jsonl(tmp_path / "n.jsonl", NOTES), tmp_path / "o.npz", plan=plan, pid=0, labels=LABELS,
                    scaler=_scaler(run), embedding=fake_config, encoder=FakeEncoder(fake_config))


def test_node_data_path_embeds_notes_into_the_state_dir(run, tmp_path, fake_config, monkeypatch) -> None:
    monkeypatch.setattr("fedicd.embedding.pipeline.load_encoder", FakeEncoder)
    notes = _jsonl(tmp_path / "n.jsonl", NOTES)
    settings = parse_node_config({"partition-id": 0, "data-path": str(notes), "state-dir": str(tmp_path / "st"),
                                  "model-path": fake_config.model})
    embedding = {**dataclasses.asdict(fake_config), "model": "somewhere-else"}  # the node's model-path wins
    path = node_data_path(settings, read_plan(run), LABELS, scaler=_scaler(run), embedding=embedding)
    assert path == tmp_path / "st" / EMBEDDED_DATA
    assert json.loads(path.with_name("made_from.json").read_text())["made_from"]["embedding"]["model"] == \
        fake_config.model
    assert list((tmp_path / "st" / "embedding_cache").iterdir())  # the vector cache is the node's own


def test_a_site_of_another_size_is_refused_under_dp_sgd_only(tmp_path: Path, caplog) -> None:
    """DP-SGD's noise was calibrated for the planned number of notes: a node holding another number is refused."""
    plain = tmp_path / "plain"
    stage_run(plain, sizes=(61, 30, 30))
    assert read_plan(plain).client_sizes == (21, 20, 20)
    dp = dataclasses.replace(read_plan(plain), privacy=PrivacyPlan(dp="sample"))  # only its mode is read here
    other = {"partition-id": 1, "data-path": str(client_data_path(plain, 0))}  # client 0's 21 notes as client 1
    with caplog.at_level(logging.WARNING, logger="fedicd.deploy.node_data"):
        assert node_data_path(parse_node_config(other), read_plan(plain), LABELS) == client_data_path(plain, 0)
    assert "holds 21 training notes; the study's plan counted 20 for client 1" in caplog.text
    with pytest.raises(NodeConfigError, match=r"holds 21 training notes but the study planned DP-SGD for client 1 "
                                              r"with 20: its noise was calibrated for that many"):
        node_data_path(parse_node_config(other), dp, LABELS)


def test_a_site_embedding_its_notes_gets_the_rows_central_staging_gives_it(tmp_path, fake_config, monkeypatch) -> None:
    """The same notes, encoder and scaler: the node's embedded file equals the client file staging wrote."""
    from fedicd.config import load_config
    from fedicd.federated.data import stage_data
    from fedicd.partition.manifest import read_manifest
    from fedicd.runner.staging import build_plan

    from tests.corpora import FREE_CORPUS, write_free_label_corpus

    monkeypatch.setattr("fedicd.embedding.pipeline.load_encoder", FakeEncoder)
    corpus = write_free_label_corpus(tmp_path)  # 3 free labels: no ICD catalogue to load
    cfg = load_config(None, [*(f'data.{k}="{v}"' for k, v in {**FREE_CORPUS, "path": corpus}.items()),
                             'train.mode="federated"', "partition.n_clients=3", f'cache_dir="{tmp_path / "cache"}"',
                             f'embedding.model="{fake_config.model}"', 'embedding.device="cpu"',
                             "embedding.chunk_overlap=4", 'embedding.model_language="en"'])
    run = tmp_path / "run"
    staged = stage_data(cfg, run)
    notes, parts = staged.data.notes, staged.data.parts
    val = read_manifest(run / "partition_val.json")[0].clients[0]
    rows = [(i, "train") for i in parts["train"][staged.partition.clients[0]]] + [(i, "val") for i in parts["val"][val]]
    site = _jsonl(tmp_path / "site0.jsonl", [{"text": notes.texts[i], "codes": list(notes.codes[i]), "split": s}
                                             for i, s in rows])
    labels = tuple(str(c) for c in staged.data.binarizer.classes_)
    plan = build_plan(cfg, input_dim=staged.input_dim, n_labels=len(labels), client_sizes=staged.partition.sizes)
    out = embed_notes(site, tmp_path / "node" / EMBEDDED_DATA, plan=plan, pid=0, labels=labels, scaler=_scaler(run),
                      embedding=cfg.embedding, cache_dir=tmp_path / "node-cache")
    local, central = read_client_data(out, labels=labels), read_client_data(client_data_path(run, 0), labels=labels)
    assert len(central.x_train) > 100 and len(central.x_val) > 10 and central.y_train.any()
    for name in ("x_train", "y_train", "x_val", "y_val"):
        np.testing.assert_array_equal(getattr(local, name), getattr(central, name), err_msg=name)


def test_embedding_noise_is_the_nodes_own_seeded_by_the_plan_and_the_site(tmp_path, fake_config) -> None:
    """privacy.embedding_noise: each node noises its own vectors before the scaler (seed: plan seed and site)."""
    run = tmp_path / "run"
    stage_run(run, "privacy.embedding_noise=0.1")
    notes = _jsonl(tmp_path / "n.jsonl", NOTES)

    def embedded(pid: int, name: str) -> np.ndarray:
        out = embed_notes(notes, tmp_path / name / "data.npz", plan=read_plan(run), pid=pid, labels=LABELS,
                          scaler=_scaler(run), embedding=fake_config, encoder=FakeEncoder(fake_config))
        return read_client_data(out).x_train

    first, again, other = embedded(0, "a"), embedded(0, "b"), embedded(1, "c")
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    from fedicd.embedding import embed_texts
    from fedicd.privacy.config import noise_embeddings
    from fedicd.scaling import load_scaler

    raw = embed_texts([n["text"] for n in NOTES], fake_config, progress=False, encoder=FakeEncoder(fake_config))
    seed = int(np.random.SeedSequence([read_plan(run).seed, 0]).generate_state(1)[0])
    expected = load_scaler(run / "scaler.npz").transform(noise_embeddings(raw.vectors, 0.1, seed=seed))
    np.testing.assert_allclose(first, expected[:4].astype(np.float32), rtol=1e-6)  # the 4 training notes
