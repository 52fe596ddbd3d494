"""The bad-input and fault catalogue's parts: a case, the groups, and workspace builders.

Each :class:`Case` runs the ``fedicd`` command line in a fresh folder (``ws``)
and states the exit status and the words the user must see. Every case also
checks, without saying so, that no Python traceback reaches the user and,
for a refused command, that nothing was written or changed: every file present
before the command is byte-identical afterwards and no result file appeared.

A case that needs a whole federated simulation, or a process to be killed,
names the test that covers it (``covered_by``) instead of an ``argv``; the
catalogue test checks that this test exists.

The cases are listed in :mod:`tests.reliability.cases`;
``python -m tests.reliability.render --write docs/reliability.md`` regenerates
the documentation page from them (a test fails when it is stale).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"
DEMO = REPO / "fedicd" / "resources" / "demo.toml"

GROUPS = {
    "lost": "Earlier results are never lost",
    "wrong": "No exit 0 with a wrong result",
    "trace": "No traceback",
    "message": "A message that names the problem",
    "corpus": "Small and unusual corpora",
    "process": "Processes and output",
    "config": "Config errors (worked before; kept from regressing)",
    "data": "Data errors (worked before; kept from regressing)",
}


@dataclass(frozen=True)
class Case:
    """One row of the catalogue.

    ``argv`` builds the command line inside the workspace ``ws`` (after
    ``setup`` prepared it); ``shows`` are substrings that must appear in what
    the command printed (stdout + stderr); ``exit`` is its status.
    ``patch`` names a fault injected in-process (see ``PATCHES`` in the test);
    ``check`` asserts more about the workspace and what was printed.
    """

    id: str
    group: str
    does: str
    shows: tuple[str, ...] = ()
    exit: int = 2
    argv: Callable[[Path], list[str]] | None = None
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path, str], None] | None = None
    patch: str | None = None
    covered_by: str | None = None
    needs: str | None = None  # "minilm" or "codiesp"
    replaces: bool = False  # a successful command may replace earlier files (--overwrite)


# ------------------------------------------------------------------ workspace builders
TINY = {"n_notes": 60, "n_codes": 20, "min_train_count": 2}


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


# embeddings are shared across cases (and sessions: the cache verifies what it serves)
SHARED_CACHE = Path(tempfile.gettempdir()) / "fedicd-catalogue-cache"


def write_config(ws: Path, name: str = "cfg.toml", *, cache: Path | None = None, **sections) -> Path:
    """A TOML file from ``section={key: value}`` keyword tables (``top={...}`` for top-level keys)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in sections.pop("top", {}).items()]
    lines.append(f'cache_dir = "{cache or SHARED_CACHE}"')
    for section, table in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path = ws / name
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_central(ws: Path, *, cache: Path | None = None, **extra) -> Path:
    sections = {"data": {"source": "synthetic", **TINY}, "embedding": {"max_tokens": 128},
                "train": {"epochs": 2}}
    for section, table in extra.items():
        sections[section] = {**sections.get(section, {}), **table}
    return write_config(ws, cache=cache, **sections)


def tiny_federated(ws: Path, **extra) -> Path:
    sections = {"train": {"mode": "federated"}, "partition": {"n_clients": 3},
                "federated": {"rounds": 2, "engine": "inprocess"}}
    for section, table in extra.items():
        sections[section] = {**sections.get(section, {}), **table}
    return tiny_central(ws, **sections)


def tabular(ws: Path, rows: list[dict], name: str = "notes.csv", *, cache: Path | None = None, **data) -> Path:
    """A CSV (columns from the first row) and a central config that loads it."""
    import csv

    path = ws / name
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["text", "codes"])
        writer.writeheader()
        writer.writerows(rows)
    return write_config(ws, data={"source": "tabular", "path": str(path), **data},
                        embedding={"max_tokens": 128}, train={"epochs": 2}, cache=cache)


def corpus_config(ws: Path, kind: str, **sections) -> Path:
    """A config over one of tests/corpora.py's user corpora (``kind``: ``"site"`` or ``"free"``)."""
    from tests.corpora import FREE_CORPUS, SITE_CORPUS, write_free_label_corpus, write_small_site_corpus

    write, data = ((write_small_site_corpus, SITE_CORPUS) if kind == "site" else
                   (write_free_label_corpus, FREE_CORPUS))
    path = write(ws / "corpus")
    base = {"data": {**data, "path": str(path), **sections.pop("data", {})}, "embedding": {"max_tokens": 128},
            "train": {"epochs": 3}}
    for section, table in sections.items():
        base[section] = {**base.get(section, {}), **table}
    return write_config(ws, **base)


def _private_cache(ws: Path) -> Path:
    return ws.parent / "private-cache"  # outside ws: a cache is derived data the command may repair


def embedded_then(ws: Path, damage: Callable[[Path], None]) -> None:
    """Embed 12 short notes once (``fedicd embed`` into ws/first, private cache), then damage the cache."""
    from fedicd.cli import main

    tabular(ws, ROWS(12, text=lambda i: f"Patient {i} seen for follow up of chronic condition number {i}."),
            cache=_private_cache(ws))
    if main(["embed", str(ws / "cfg.toml"), "--out", str(ws / "first")]) != 0:
        raise RuntimeError("the first embedding failed")
    damage(_private_cache(ws))


def _shard(cache: Path) -> Path:
    shards = sorted(cache.rglob("shard-*.npy"))
    if not shards:
        raise RuntimeError(f"no cache shard under {cache}")
    return shards[0]


def overwrite_cache_rows(cache: Path) -> None:
    """Finite garbage over the stored rows, file size unchanged."""
    import numpy as np

    vectors = np.load(_shard(cache), mmap_mode="r+")
    vectors[: len(vectors) // 2] = np.random.default_rng(0).normal(size=vectors[: len(vectors) // 2].shape)
    vectors.flush()


def truncate_cache(cache: Path) -> None:
    shard = _shard(cache)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


SPANISH = ["Paciente de 54 años que acude a urgencias por dolor torácico de dos horas de evolución, sin "
           "antecedentes de interés, con la tensión arterial elevada y la exploración física normal.",
           "Mujer de 70 años con diabetes mellitus tipo 2 y insuficiencia renal crónica que ingresa por "
           "neumonía adquirida en la comunidad; se inicia tratamiento antibiótico y evoluciona bien."]


def mixed_ckks_keys(ws: Path) -> None:
    """``ws/keys`` whose public.ctx comes from another ``fedicd keys`` call than its secret.ctx."""
    from fedicd.cli import main

    for name in ("keys", "other"):
        if main(["keys", "--out", str(ws / name)]) != 0:
            raise RuntimeError("fedicd keys failed")
    (ws / "keys" / "public.ctx").write_bytes((ws / "other" / "public.ctx").read_bytes())
    tiny_federated(ws)


def header_only(ws: Path) -> Path:
    (ws / "notes.csv").write_text("text,codes\n")
    return write_config(ws, data={"source": "tabular", "path": str(ws / "notes.csv")})


def put(rel: str, content: str = "x") -> Callable[[Path], None]:
    """A setup that leaves an earlier file at ``ws/rel``."""
    def setup(ws: Path) -> None:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(content)
    return setup


def finished_central_run(ws: Path) -> None:
    """A finished central run in ``ws/out`` (copied from the session's shared run)."""
    from tests.reliability.shared_runs import central_run

    shutil.copytree(central_run(), ws / "out")


def only_fedicd_files_left(out: Path) -> None:
    """After a successful --overwrite: the new results, and nothing set aside (all of it was fedicd's)."""
    from fedicd.output_dir import PREVIOUS

    assert (out / "results.json").exists() and not (out / PREVIOUS).exists(), sorted(p.name for p in out.iterdir())


def clean_federated_run(ws: Path, printed: str) -> None:
    """A federated run that refused nothing, with a round counter and no framework log on the console."""
    results = json.loads((ws / "out" / "results.json").read_text())
    assert results["rejections"] == [], results["rejections"][:3]
    assert all(row["client_failures"] == 0 for row in results["history"])
    assert "round 1/" in printed and "flwr" not in printed.lower(), printed


def cfg(ws: Path) -> str:
    return str(ws / "cfg.toml")


def run(*sets: str, verb: str = "run", out: str = "out") -> Callable[[Path], list[str]]:
    """``fedicd VERB ws/cfg.toml --out ws/OUT --set ...`` (the config is written by the case's setup)."""
    def argv(ws: Path) -> list[str]:
        return [verb, cfg(ws), "--out", str(ws / out), *sum((["--set", s] for s in sets), [])]
    return argv


def attack(attribute: str) -> Callable[[Path], list[str]]:
    """``fedicd attack attribute ws/cfg.toml --attribute A`` without defences (one utility head)."""
    def argv(ws: Path) -> list[str]:
        return ["attack", "attribute", str(ws / "cfg.toml"), "--out", str(ws / "out"), "--attribute", attribute,
                "--defences", "none", "--n-labelled", "20"]
    return argv


def with_config(builder: Callable[..., Path], then: Callable[[Path], None] | None = None,
                **extra) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        builder(ws, **extra)
        if then is not None:
            then(ws)
    return setup


def gz_garbage(ws: Path) -> Path:
    (ws / "notes.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-gzip")
    return write_config(ws, data={"source": "tabular", "path": str(ws / "notes.csv.gz")})


def jsonl_bad(ws: Path) -> Path:
    (ws / "notes.jsonl").write_text('{"text": "a", "codes": ["I10"]}\n{"text": oops}\n')
    return write_config(ws, data={"source": "tabular", "path": str(ws / "notes.jsonl")})


def ROWS(n: int = 30, **over) -> list[dict]:
    codes = ["I10", "E11.9", "J18.9", "N18.3"]
    return [{"text": f"Patient {i} seen for follow up of chronic conditions.", "codes": codes[i % 4],
             **{k: (v(i) if callable(v) else v) for k, v in over.items()}} for i in range(n)]
