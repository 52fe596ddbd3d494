"""The bad-input and fault catalogue: what a user does, and what fedicd must answer (one row each).

Groups ``lost`` … ``process`` are the faults found by a reliability review and
fixed; ``config`` and ``data`` are inputs that were already answered well and
are kept here so that none regresses. See :mod:`tests.reliability.catalogue`
for what every case checks besides its own words.
"""

from __future__ import annotations

from tests.reliability.catalogue import (
    ROWS, SPANISH, Case, attack, clean_federated_run, mixed_ckks_keys, only_fedicd_files_left, corpus_config, embedded_then, finished_central_run, overwrite_cache_rows, truncate_cache, gz_garbage, header_only, jsonl_bad, put, run, tabular, tiny_central,
    tiny_federated, with_config, write_config,
)

C, F = tiny_central, tiny_federated

LOST = [
    Case("rerun-over-central-run", "lost", "`fedicd run` again into the --out of a finished central run",
         ("already holds files", "--overwrite"), setup=lambda ws: (finished_central_run(ws), C(ws)), argv=run(),
         needs="minilm"),
    Case("run-over-federated-run", "lost", "`fedicd run` (federated) into a folder holding a federated run",
         ("already holds files", "--overwrite"), setup=with_config(F, put("out/checkpoint/state.json")), argv=run()),
    Case("central-over-federated-run", "lost", "a central `fedicd run` into a folder holding a federated run",
         ("already holds files",), setup=with_config(C, put("out/run_plan.json", "{}")), argv=run()),
    Case("partition-over-partition", "lost", "`fedicd partition` into a folder holding a partition manifest",
         ("already holds files",), setup=with_config(C, put("out/partition.json", "{}")),
         argv=run(verb="partition")),
    Case("prepare-over-notes", "lost", "`fedicd prepare` into a folder holding prepared notes",
         ("already holds files",), setup=with_config(C, put("out/notes.jsonl.gz")), argv=run(verb="prepare")),
    Case("embed-over-embeddings", "lost", "`fedicd embed` into a folder holding embeddings",
         ("already holds files",), setup=with_config(C, put("out/embeddings.npy")), argv=run(verb="embed")),
    Case("attack-over-report", "lost", "`fedicd attack attribute` into a folder holding an attack report",
         ("already holds files",), setup=with_config(C, put("out/leakage_utility.json", "{}")),
         argv=lambda ws: ["attack", "attribute", str(ws / "cfg.toml"), "--out", str(ws / "out")]),
    Case("overwrite-foreign-folder", "lost", "`--overwrite` on a folder of files fedicd did not write",
         ("fedicd did not write", "nothing was changed"), setup=with_config(C, put("out/thesis.tex")),
         argv=lambda ws: run()(ws) + ["--overwrite"]),
    Case("overwrite-earlier-run", "lost", "`--overwrite` into the folder of a finished central run",
         ("results:",), exit=0, replaces=True, setup=lambda ws: (finished_central_run(ws), C(ws)),
         argv=lambda ws: run()(ws) + ["--overwrite"], check=lambda ws, _: only_fedicd_files_left(ws / "out"),
         needs="minilm"),
    Case("overwrite-then-failure", "lost", "`--overwrite` with a command that then fails (the earlier run "
         "must come back)", ("nope.csv",), setup=lambda ws: (finished_central_run(ws), C(ws)),
         argv=lambda ws: run('data.source="tabular"', 'data.path="nope.csv"')(ws) + ["--overwrite"], needs="minilm"),
    Case("overwrite-stray-results-file", "lost", "`--overwrite` on a folder holding a results.json beside "
         "other files", ("fedicd did not write (thesis.tex)",),
         setup=with_config(C, lambda ws: (put("out/results.json")(ws), put("out/thesis.tex")(ws))),
         argv=lambda ws: run()(ws) + ["--overwrite"]),
    Case("resume-and-overwrite", "lost", "`--resume --overwrite` together", ("give one of them",),
         setup=F, argv=lambda ws: run()(ws) + ["--resume", "--overwrite"]),
    Case("resume-empty-folder", "lost", "`--resume` on an empty folder", ("no run to continue",),
         setup=with_config(F, lambda ws: (ws / "out").mkdir()), argv=lambda ws: run()(ws) + ["--resume"]),
]

WRONG = [
    Case("rounds-true", "wrong", "`--set federated.rounds=true`",
         ("federated.rounds must be an integer, got true (a boolean)",), setup=F, argv=run("federated.rounds=true")),
    Case("epochs-2.5", "wrong", "`--set train.epochs=2.5` (failed only after embedding, with a traceback)",
         ("train.epochs must be an integer, got 2.5",), setup=C, argv=run("train.epochs=2.5")),
    Case("rounds-2.0", "wrong", "`rounds = 2.0` in the config", ("federated.rounds must be an integer, got 2.0",),
         setup=F, argv=run("federated.rounds=2.0")),
    Case("flag-as-int", "wrong", "`validate_updates = 1` where a boolean is meant",
         ("federated.validate_updates must be true or false, got 1",), setup=F,
         argv=run("federated.validate_updates=1")),
    Case("min-per-client-in-central-run", "wrong", "`partition.min_per_client` in a central run (was ignored)",
         ("partition.min_per_client",), setup=with_config(C, partition={"min_per_client": 2}), argv=run()),
]

TRACE = [
    Case("out-read-only-run", "trace", "`fedicd run --out` on a folder that cannot be written",
         ("cannot write to --out", "Permission denied"), setup=C, argv=run(), patch="read_only"),
    Case("out-read-only-keys", "trace", "`fedicd keys --out` on a folder that cannot be written",
         ("cannot write to --out", "Permission denied"), patch="read_only",
         argv=lambda ws: ["keys", "--out", str(ws / "keys")]),
    Case("out-below-file-run", "trace", "`fedicd run --out FILE/sub` (a regular file on the way)",
         ("is a regular file",), setup=with_config(C, put("afile")), argv=run(out="afile/sub")),
    Case("out-below-file-keys", "trace", "`fedicd keys --out FILE/sub`", ("is a regular file",),
         setup=put("afile"), argv=lambda ws: ["keys", "--out", str(ws / "afile" / "k")]),
    Case("out-is-file", "trace", "`fedicd run --out FILE`", ("is a regular file",),
         setup=with_config(C, put("afile")), argv=run(out="afile")),
]

MESSAGE = [
    Case("rounds-string", "message", "`--set federated.rounds=ten`",
         ("federated.rounds must be an integer, got 'ten' (a string)",), setup=F, argv=run("federated.rounds=ten")),
    Case("header-only-csv", "message", "a CSV with a header and no rows", ("notes.csv", "no rows"),
         setup=header_only, argv=run(verb="prepare")),
    Case("all-empty-text-csv", "message", "a CSV whose every text is empty",
         ("all 3 rows were dropped (empty_text=3)", "nothing to load"),
         setup=lambda ws: tabular(ws, ROWS(3, text=" ")), argv=run(verb="prepare")),
]

CACHE = [
    Case("cache-rows-overwritten", "wrong", "300 cached vectors overwritten with finite garbage (were served)",
         ("fail their checksum", "re-embedded after failing the cache check"), exit=0,
         setup=lambda ws: embedded_then(ws, overwrite_cache_rows), argv=run(verb="embed"), needs="minilm"),
    Case("cache-truncated", "message", "a truncated cache file (numpy's `mmap length` error, no file named)",
         ("vectors are unreadable", ".npy"), exit=0, setup=lambda ws: embedded_then(ws, truncate_cache),
         argv=run(verb="embed"), needs="minilm"),
    Case("foreign-language-text", "corpus", "Spanish notes through the English default encoder",
         ("texts look like another language than English",), exit=0,
         setup=lambda ws: tabular(ws, ROWS(12, text=lambda i: SPANISH[i % len(SPANISH)])), argv=run(verb="embed"),
         needs="minilm"),
]

RULES = [
    Case("label-rule-drops-every-note", "message", "the paper's label rule on a 40-note corpus",
         ("data.min_per_client=1 × data.n_clients=20 keeps codes with >= 20 notes", "removed all"),
         setup=lambda ws: corpus_config(ws, "site", data={"min_per_client": 1}), argv=run()),
    Case("min-train-count-drops-all", "message", "`data.min_train_count` above every code's count",
         ("data.min_train_count=500",), setup=C, argv=run("data.min_train_count=500")),
    Case("tiny-split-warned", "corpus", "a 40-note corpus split 70/15/15 (val and test got 2 notes, no warning)",
         ("split has only",), exit=0, setup=lambda ws: corpus_config(ws, "site"), argv=run(), needs="minilm"),
    Case("kfold-bad-fold", "config", "`data.fold = 5` with `data.n_folds = 5`", ("data.fold",),
         setup=C, argv=run('data.split="kfold"', "data.n_folds=5", "data.fold=5")),
    Case("infeasible-codes-federated", "wrong", "`partition.min_per_client` that every code breaks, in `fedicd run`",
         ("partition.min_per_client",), setup=with_config(F, partition={"min_per_client": 50}), argv=run()),
    Case("n-clients-disagree", "wrong", "`data.n_clients = 20` for the label rule but `partition.n_clients = 3`",
         ("data.n_clients=20", "partition.n_clients"), setup=with_config(F, data={"min_per_client": 1}), argv=run()),
]

FEDERATED = [
    Case("ckks-mixed-key-folder", "wrong", "a CKKS key folder mixing two `fedicd keys` calls (every update was "
         "rejected, exit 0, 0 failures)", ("secret.ctx", "public.ctx"), setup=mixed_ckks_keys,
         argv=run('secure_aggregation.method="ckks"', 'secure_aggregation.key_dir="keys"')),
    Case("ckks-all-updates-rejected", "wrong", "a CKKS run whose ciphertexts are all refused must exit non-zero "
         "and count them as failures", covered_by="tests.federated.test_run_outcome::"
         "test_a_ckks_run_whose_ciphertexts_are_all_refused_exits_non_zero"),
    Case("all-updates-rejected", "wrong", "a run whose every update is rejected (NaN) writes its results, then "
         "fails", covered_by="tests.federated.test_run_outcome::"
         "test_a_run_whose_updates_were_all_rejected_fails_after_writing_its_results"),
    Case("resume-advice-config-error", "message", "a crash caused by a config error no longer ends with "
         "\"continue it with --resume\"", covered_by="tests.federated.test_run_outcome::"
         "test_a_deterministic_crash_does_not_advise_resume"),
    Case("resume-advice-rules", "message", "resume is advised only with a checkpoint and a cause resuming can fix",
         covered_by="tests.federated.test_run_outcome::test_crash_advice_names_resume_only_when_it_can_work"),
    Case("kill-9-driver", "process", "`kill -9` of the driver during a Ray simulation (Ray processes outlived it)",
         covered_by="tests.federated.test_processes::test_no_ray_process_outlives_a_killed_driver"),
    Case("sigterm-driver", "process", "SIGTERM to the driver during a Ray simulation",
         covered_by="tests.federated.test_processes::test_sigterm_shuts_ray_down_and_exits_2_with_resume_advice"),
    Case("quiet-federated-run", "process", "a federated run without -v (Flower and Ray logs flooded stderr, no "
         "round counter)", covered_by="tests.federated.test_run_outcome::"
         "test_quiet_run_prints_a_round_counter_and_keeps_framework_logs_in_a_file"),
    Case("one-epsilon-key", "process", "the final ε in results.json (two key names, no meaning given)",
         covered_by="tests.privacy.test_private_runs::test_sample_dp_run_reports_every_clients_composed_epsilon"),
    Case("dev-extra-downgrades", "process", "installing `.[dev]` after the base (downgraded huggingface-hub and "
         "fsspec)", covered_by="tests.test_packaging::test_base_caps_what_the_dev_extra_would_downgrade"),
]

CORPUS = [
    Case("codes-normalised-listed", "corpus", "codes written `R201` and `k80.2` (normalised silently before)",
         ("codes_normalised=2", "R201->R20.1", "k80.2->K80.2"), exit=0,
         setup=lambda ws: tabular(ws, ROWS(2, codes=lambda i: ["R201", "k80.2"][i])), argv=run(verb="prepare")),
    Case("free-labels-load", "corpus", "a severity column as labels (`data.label_kind = \"free\"`)",
         ("label_kind=free",), exit=0, setup=lambda ws: corpus_config(ws, "free"), argv=run(verb="prepare")),
    Case("free-labels-refuse-rollup", "corpus", "free labels with `data.granularity = \"category\"`",
         ("granularity",), setup=lambda ws: corpus_config(ws, "free"), argv=run('data.granularity="category"')),
    Case("site-corpus-attack-any-column", "corpus", "`fedicd attack attribute --attribute \"Patient sex\"` "
         "(only five built-in names were accepted)", ("Patient sex_auc",), exit=0,
         setup=lambda ws: corpus_config(ws, "site"), argv=attack("Patient sex"), needs="minilm"),
    Case("site-corpus-attack-site", "corpus", "`--attribute site` on a tabular corpus with a site column "
         "(refused for every non-synthetic source)", ("site_top1_accuracy",), exit=0,
         setup=lambda ws: corpus_config(ws, "site"), argv=attack("site"), needs="minilm"),
    Case("site-corpus-federated-natural", "corpus", "the 13-site corpus federated by site (`partition.scheme = "
         "\"natural\"`; refused before: every site needed validation notes)", ("results:",), exit=0,
         setup=lambda ws: corpus_config(ws, "site", train={"mode": "federated"}, partition={"scheme": "natural"},
                                        federated={"rounds": 2, "fraction_evaluate": 1.0, "engine": "inprocess"}),
         argv=run(), check=clean_federated_run, needs="minilm"),
    Case("free-corpus-central", "corpus", "the 500-row severity corpus, central", ("results:",), exit=0,
         setup=lambda ws: corpus_config(ws, "free"), argv=run(), needs="minilm"),
    Case("free-corpus-federated", "corpus", "the 500-row severity corpus over 3 IID clients", ("results:",),
         exit=0, setup=lambda ws: corpus_config(ws, "free", train={"mode": "federated"},
                                                partition={"n_clients": 3}, federated={"rounds": 2}),
         argv=run(), check=clean_federated_run, needs="minilm"),
    Case("free-corpus-attack-column", "corpus", "`fedicd attack attribute --attribute Ward` on free labels",
         ("label micro-F1",), exit=0, setup=lambda ws: corpus_config(ws, "free"), argv=attack("Ward"),
         needs="minilm"),
    Case("attack-unknown-column", "corpus", "`--attribute Wrad` (a column the corpus does not have)",
         ("Wrad", "Ward"), setup=lambda ws: corpus_config(ws, "free"), argv=attack("Wrad")),
    Case("attack-code-attribute-on-free-labels", "corpus", "`--attribute mental_health` on free labels "
         "(scored meaningless values)", ("mental_health",), setup=lambda ws: corpus_config(ws, "free"),
         argv=attack("mental_health")),
    Case("site-corpus-loads", "corpus", "40 multi-line reports, 13 sites, spaced column names",
         ("read 40",), exit=0, setup=lambda ws: corpus_config(ws, "site"), argv=run(verb="prepare")),
]

CONFIG = [
    Case("config-missing", "config", "a config path that does not exist", ("config file not found",),
         argv=lambda ws: ["run", str(ws / "nope.toml"), "--out", str(ws / "out")]),
    Case("config-bad-toml", "config", "a config that is not valid TOML", ("invalid TOML",),
         setup=put("cfg.toml", "[data\nsource = 1"), argv=run()),
    Case("config-unknown-top-key", "config", "an unknown top-level key", ("unknown top-level key(s) ['sed']",),
         setup=lambda ws: write_config(ws, top={"sed": 1}), argv=run()),
    Case("config-unknown-key", "config", "a misspelt key in [train]", ("unknown key(s) ['epoch'] in [train]",),
         setup=C, argv=run("train.epoch=3")),
    Case("config-section-not-table", "config", "`data = 3` instead of a [data] table", ("[data] must be a table",),
         setup=put("cfg.toml", "data = 3\n"), argv=run()),
    Case("config-train-and-training", "config", "both [train] and [training]", ("either [train] or [training]",),
         setup=lambda ws: write_config(ws, train={"epochs": 1}, training={"epochs": 2}), argv=run()),
    Case("set-without-equals", "config", "`--set train.epochs`", ("--set expects key=value",), setup=C,
         argv=run("train.epochs")),
    Case("set-into-value", "config", "`--set seed.x=1` (seed is a value)", ("seed must be an integer, got {'x': 1} (a table)",),
         setup=C, argv=run("seed.x=1")),
    Case("seed-negative", "config", "`seed = -1`", ("seed must be an integer >= 0",), setup=C, argv=run("seed=-1")),
    Case("unknown-source", "config", "`data.source = \"excel\"`", ("data.source must be one of",), setup=C,
         argv=run('data.source="excel"')),
    Case("source-without-path", "config", "a tabular source without data.path",
         ("data.path is required for data.source = 'tabular'",), setup=C, argv=run('data.source="tabular"')),
    Case("unknown-split", "config", "`data.split = \"random\"`", ("data.split must be one of",), setup=C,
         argv=run('data.split="random"')),
    Case("train-parts-test", "config", "training on the test split", ("data.train_parts must contain 'train'",),
         setup=C, argv=run('data.train_parts=["train", "test"]')),
    Case("val-fraction-1.5", "config", "`data.val_fraction = 1.5`", ("data.val_fraction must be in (0, 1)",),
         setup=C, argv=run("data.val_fraction=1.5")),
    Case("unknown-head", "config", "`train.head = \"transformer\"`", ("transformer",), setup=C,
         argv=run('train.head="transformer"')),
    Case("epochs-zero", "config", "`train.epochs = 0`", ("epochs must be >= 1",), setup=C, argv=run("train.epochs=0")),
    Case("bad-device", "config", "`train.device = \"tpu\"`", ("device must be",), setup=C,
         argv=run('train.device="tpu"')),
    Case("unknown-strategy", "config", "`federated.strategy = \"fedsgd\"`", ("federated.strategy must be one of",),
         setup=F, argv=run('federated.strategy="fedsgd"')),
    Case("fraction-train-1.5", "config", "`federated.fraction_train = 1.5`",
         ("federated.fraction_train must be in [0, 1]",), setup=F, argv=run("federated.fraction_train=1.5")),
    Case("client-cpus-above-total", "config", "`client_cpus` above `total_cpus`", ("federated.client_cpus must be",),
         setup=F, argv=run("federated.client_cpus=4")),
    Case("unknown-local-optimizer", "config", "`federated.local_optimizer = \"adam\"`",
         ("federated.local_optimizer must be one of",), setup=F, argv=run('federated.local_optimizer="adam"')),
    Case("unknown-partition-scheme", "config", "`partition.scheme = \"random\"`", ("partition.scheme must be one of",),
         setup=F, argv=run('partition.scheme="random"')),
    Case("partition-balance-0.5", "config", "`partition.balance = 0.5`", ("partition.balance must be 0",), setup=F,
         argv=run("partition.balance=0.5")),
    Case("dp-in-central-mode", "config", "`privacy.dp = \"sample\"` in a central run", ("needs train.mode = 'federated'",),
         setup=C, argv=run('privacy.dp="sample"', "privacy.noise=1.0")),
    Case("unknown-dp-mode", "config", "`privacy.dp = \"local\"`", ("privacy.dp",), setup=F, argv=run('privacy.dp="local"')),
    Case("ckks-without-keys", "config", "CKKS without a key folder", ("key_dir",), setup=F,
         argv=run('secure_aggregation.method="ckks"')),
    Case("unknown-secure-method", "config", "`secure_aggregation.method = \"paillier\"`", ("secure_aggregation.method",),
         setup=F, argv=run('secure_aggregation.method="paillier"')),
    Case("resume-central", "config", "`--resume` on a central config", ("--resume applies to federated runs",),
         setup=C, argv=lambda ws: run()(ws) + ["--resume"]),
    Case("unknown-pooling", "config", "`embedding.pooling = \"max-ish\"`", ("pooling",), setup=C,
         argv=run('embedding.pooling="max-ish"')),
    Case("embedding-model-missing", "config", "`embedding.model` naming a folder that does not exist",
         ("looks like a path but no such directory exists",), setup=C, argv=run('embedding.model="/no/such/model"',
                                                                                   verb="embed")),
    Case("keys-exist", "config", "`fedicd keys` into a folder that already holds keys", ("--overwrite",),
         setup=lambda ws: __import__("fedicd.cli").cli.main(["keys", "--out", str(ws / "k")]),
         argv=lambda ws: ["keys", "--out", str(ws / "k")]),
    Case("keys-bad-limbs", "config", "`fedicd keys --limbs 9`", ("limbs",),
         argv=lambda ws: ["keys", "--out", str(ws / "k"), "--limbs", "9"]),
    Case("attack-bad-defence", "config", "`fedicd attack … --defences blur:3`", ("blur",), setup=C,
         argv=lambda ws: ["attack", "attribute", str(ws / "cfg.toml"), "--out", str(ws / "out"),
                          "--defences", "blur:3"]),
    Case("evaluate-missing-run", "config", "`fedicd evaluate` on a folder with no run", ("No such file or directory", "nothing/results.json"),
         argv=lambda ws: ["evaluate", str(ws / "nothing")]),
]

DATA = [
    Case("data-path-missing", "data", "data.path names a file that does not exist", ("nope.csv",),
         setup=lambda ws: write_config(ws, data={"source": "tabular", "path": str(ws / "nope.csv")}),
         argv=run(verb="prepare")),
    Case("data-bad-suffix", "data", "a spreadsheet (.xlsx) as data.path", ("unsupported file type",),
         setup=lambda ws: (put("notes.xlsx")(ws), write_config(ws, data={"source": "tabular",
                                                                         "path": str(ws / "notes.xlsx")})),
         argv=run(verb="prepare")),
    Case("data-missing-column", "data", "a CSV without the configured text column", ("missing required column 'text'",),
         setup=lambda ws: tabular(ws, [{"body": "x", "codes": "I10"}]), argv=run(verb="prepare")),
    Case("data-malformed-code", "data", "a malformed ICD-10 code in one row", ("row 3", "malformed ICD-10"),
         setup=lambda ws: tabular(ws, ROWS(5, codes=lambda i: "XYZ" if i == 2 else "I10")), argv=run(verb="prepare")),
    Case("data-duplicate-ids", "data", "duplicate note ids", ("duplicate ids in column 'id'",),
         setup=lambda ws: tabular(ws, ROWS(5, id=lambda i: f"n{i % 3}"), id_column="id"), argv=run(verb="prepare")),
    Case("data-empty-id", "data", "an empty note id", ("empty id in column 'id'",),
         setup=lambda ws: tabular(ws, ROWS(5, id=lambda i: "" if i == 1 else f"n{i}"), id_column="id"),
         argv=run(verb="prepare")),
    Case("data-unknown-split-value", "data", "a split column holding `holdout`", ("unknown split 'holdout'",),
         setup=lambda ws: tabular(ws, ROWS(5, split=lambda i: "holdout" if i == 4 else "train"),
                                  split_column="split"), argv=run(verb="prepare")),
    Case("data-empty-site", "data", "an empty value in the site column", ("empty value in column 'site'",),
         setup=lambda ws: tabular(ws, ROWS(5, site=lambda i: "" if i == 0 else "A"), site_column="site"),
         argv=run(verb="prepare")),
    Case("data-bad-jsonl", "data", "a JSON-lines file with a broken line", ("row 2", "invalid JSON"),
         setup=jsonl_bad, argv=run(verb="prepare")),
    Case("data-corrupt-gzip", "data", "a .csv.gz that is not gzip", ("notes.csv.gz",), setup=gz_garbage,
         argv=run(verb="prepare")),
    Case("codiesp-missing", "data", "data.source = codiesp at a folder without CodiEsp", ("codiesp",),
         setup=lambda ws: write_config(ws, data={"source": "codiesp", "path": str(ws / "codiesp")}),
         argv=run(verb="prepare")),
    Case("mimic-missing", "data", "data.source = mimic at a folder without the MIMIC files", ("discharge",),
         setup=lambda ws: write_config(ws, data={"source": "mimic", "path": str(ws / "mimic")}),
         argv=run(verb="prepare")),
]

CASES: list[Case] = [*LOST, *WRONG, *TRACE, *MESSAGE, *CACHE, *RULES, *FEDERATED, *CORPUS, *CONFIG, *DATA]
