"""Bag-of-words inversion (Song & Raghunathan, 2020): from an embedding, the set of words in the text.

Threat model (:data:`attacks.threat.THREAT_MODELS` ``"bow_inversion"``): the
adversary embeds public auxiliary notes with the public encoder, learns a
multi-label classifier from vector to the words present (a vocabulary of the
``max_words`` most frequent auxiliary words), picks its decision threshold on a
held-out part of the auxiliary data, and applies it to the victims' vectors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attacks.scoring import words
from attacks.threat import AdversaryView

__all__ = ["BowConfig", "BowInverter", "build_vocabulary", "invert_bag_of_words"]


@dataclass(frozen=True)
class BowConfig:
    max_words: int = 2000
    min_doc_freq: int = 2
    hidden: int = 1024
    epochs: int = 40
    lr: float = 1e-3
    batch_size: int = 64
    holdout: float = 0.2
    seed: int = 0


def build_vocabulary(texts: list[str], max_words: int, min_doc_freq: int) -> list[str]:
    """The ``max_words`` words found in the most texts (ties by word), each in >= ``min_doc_freq`` texts."""
    df = Counter(w for t in texts for w in set(words(t)))
    ranked = sorted((w for w, c in df.items() if c >= min_doc_freq), key=lambda w: (-df[w], w))
    return ranked[:max_words]


def _multi_hot(texts: list[str], index: dict[str, int]) -> np.ndarray:
    y = np.zeros((len(texts), len(index)), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in set(words(t)):
            j = index.get(w)
            if j is not None:
                y[i, j] = 1.0
    return y


class BowInverter:
    """Embedding → word-set classifier trained on auxiliary (text, embedding) pairs."""

    def __init__(self, config: BowConfig = BowConfig()):
        self.config = config
        self.vocab: list[str] = []
        self.model: nn.Module | None = None
        self.threshold = 0.5

    def fit(self, embeddings: np.ndarray, texts: list[str]) -> BowInverter:
        cfg = self.config
        self.vocab = build_vocabulary(texts, cfg.max_words, cfg.min_doc_freq)
        if not self.vocab:
            raise ValueError("the auxiliary texts share no word often enough to build a vocabulary")
        y = _multi_hot(texts, {w: i for i, w in enumerate(self.vocab)})
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(texts))
        n_hold = max(1, int(cfg.holdout * len(texts)))
        hold, train = order[:n_hold], order[n_hold:]
        if len(train) == 0:
            raise ValueError("too few auxiliary texts to train and hold out")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = nn.Sequential(nn.Linear(embeddings.shape[1], cfg.hidden), nn.ReLU(),
                                       nn.Linear(cfg.hidden, len(self.vocab)))
            x_t, y_t = torch.as_tensor(embeddings[train]), torch.as_tensor(y[train])
            opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
            gen = torch.Generator().manual_seed(cfg.seed)
            for _ in range(cfg.epochs):
                for idx in torch.randperm(len(train), generator=gen).split(cfg.batch_size):
                    opt.zero_grad()
                    nn.functional.binary_cross_entropy_with_logits(self.model(x_t[idx]), y_t[idx]).backward()
                    opt.step()
        probs = self._probs(embeddings[hold])
        self.threshold = max(np.linspace(0.05, 0.95, 19),
                             key=lambda th: _micro_f1(probs >= th, y[hold] > 0))
        return self

    def _probs(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("BowInverter: call fit() before predicting")
        self.model.eval()
        with torch.inference_mode():
            return torch.sigmoid(self.model(torch.as_tensor(np.asarray(x, dtype=np.float32)))).numpy()

    def predict(self, embeddings: np.ndarray) -> list[set[str]]:
        hits = self._probs(embeddings) >= self.threshold
        return [{self.vocab[j] for j in np.flatnonzero(row)} for row in hits]


def _micro_f1(pred: np.ndarray, true: np.ndarray) -> float:
    tp = float((pred & true).sum())
    denom = float(pred.sum() + true.sum())
    return 2 * tp / denom if denom else 0.0


def invert_bag_of_words(view: AdversaryView, config: BowConfig = BowConfig()) -> tuple[list[set[str]], BowInverter]:
    """Guess each victim's word set from the adversary's view only."""
    inverter = BowInverter(config).fit(view.aux_embeddings, list(view.aux_texts))
    return inverter.predict(view.target_embeddings), inverter
