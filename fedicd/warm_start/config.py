"""``[warm_start]`` config section: public warm starts of a run's head (no privacy spent).

Two public sources, usable alone or together (descriptions first, then pre-training):

* ``init = "descriptions"``: the output layer (and, for the chunk-sequence heads, the label-attention queries) is
  built from the embedded ICD code descriptions of the labels (:mod:`fedicd.warm_start.zero_shot`), a zero-shot
  coder before any private step; federated runs (staged by :mod:`fedicd.warm_start.stage`) and central runs
  (:mod:`fedicd.warm_start.central`);
* ``public_config``: the head is pre-trained, without DP, on a public corpus (another experiment config's
  ``[data]``; its ``[embedding]`` must equal the run's) for the labels the two share
  (:mod:`fedicd.warm_start.pretrain`); federated runs only.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedicd.errors import ConfigError

__all__ = ["WarmStartConfig", "INITS", "DESCRIPTION_HEADS"]

INITS = ("random", "descriptions")
# heads whose output layer reads a linear image of the embedding, or (chunk-sequence heads) an attention-weighted
# sum of per-chunk features (label_attention: a ReLU value layer; multires_cnn: convolution features) through which
# a description, read as a one-chunk note, is passed to initialise the queries and output rows
DESCRIPTION_HEADS = ("linear", "bottleneck", "label_attention", "multires_cnn")


@dataclass(frozen=True)
class WarmStartConfig:
    """Public warm start of the head (descriptions: central and federated runs; public pre-training: federated)."""

    init: str = "random"
    """The head's output layer before training (a federated run's round 0): "random" (the seeded initialisation) or
    "descriptions" (rows from the embedded ICD code descriptions of the labels: a zero-shot coder; heads "linear",
    "bottleneck", "label_attention" and "multires_cnn", whose attention queries are set from the descriptions too)."""
    scale: float = 10.0
    """Zero-shot logit scale τ: a description row gives logit τ·(cos(note, description) − margin) (exactly with
    train.input_norm = "l2", approximately otherwise). A public constant: with margin 0.2, among the best validation
    micro-F1 of τ ∈ {5, 10, 20} × c ∈ {0.1, 0.2, 0.3} on a synthetic (public) corpus, never fitted to private labels."""
    margin: float = 0.2
    """Zero-shot cosine margin c: a note scores probability 1/2 for a code when the cosine between its scaled
    embedding and the code's scaled description vector is c. A public constant (see scale)."""
    public_config: str = ""
    """An experiment config (TOML) whose [data] is a public corpus to pre-train the head on, without DP, before
    the private rounds (federated runs); its [embedding] must equal the run's; a relative path is relative to the
    working directory. Empty: no public pre-training."""
    public_epochs: int = 5
    """Epochs of public pre-training (on the public corpus's training split)."""
    public_lr: float = 1e-3
    """Learning rate of public pre-training (AdamW with a cosine schedule, as in central training)."""
    public_batch_size: int = 0
    """Mini-batch size of public pre-training; 0 uses train.batch_size."""

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"warm_start.init must be one of {list(INITS)}, got {self.init!r}")
        if not self.scale > 0:
            raise ConfigError(f"warm_start.scale must be > 0, got {self.scale}")
        if not -1.0 <= self.margin < 1.0:
            raise ConfigError(f"warm_start.margin must be a cosine in [-1, 1), got {self.margin}")
        if self.public_epochs < 1:
            raise ConfigError(f"warm_start.public_epochs must be >= 1, got {self.public_epochs}")
        if not self.public_lr > 0:
            raise ConfigError(f"warm_start.public_lr must be > 0, got {self.public_lr}")
        if self.public_batch_size < 0:
            raise ConfigError(f"warm_start.public_batch_size must be >= 0 (0: train.batch_size), got "
                              f"{self.public_batch_size}")

    @property
    def enabled(self) -> bool:
        """True when the run starts from anything but the seeded random head."""
        return self.init != "random" or bool(self.public_config)

    @property
    def method(self) -> str:
        """``"random"``, ``"descriptions"``, ``"public"`` or ``"descriptions+public"``."""
        parts = [p for p, on in (("descriptions", self.init == "descriptions"), ("public", self.public_config)) if on]
        return "+".join(parts) or "random"
