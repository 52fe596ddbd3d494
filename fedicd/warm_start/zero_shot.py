"""The zero-shot coder: a head whose output rows are the labels' scaled description vectors.

For the ``"linear"`` head (d → L), row ``j`` of the output layer is ``(τ/√d) · s_j/‖s_j‖`` and its bias ``−τ·c``,
where ``s_j`` is the run-scaled embedding of code ``j``'s description, ``τ`` is ``warm_start.scale`` and ``c``
``warm_start.margin``. A standardised note vector ``x`` has ``E‖x‖² = d`` over the training notes (that is what
the scaler does), so the logit is ``≈ τ·(cos(x, s_j) − c)``: probability 1/2 exactly where the cosine is ``c``,
and exactly so with ``train.input_norm = "l2"`` (rows rescaled to norm √d). τ and c are public constants, not
fitted to any private label; the decision threshold of the reported scores is then chosen on validation as for
every fedicd result.

For the ``"bottleneck"`` head (d → r → L, linear, ``norm = "none"``) the first layer holds the top ``m = min(r,
k, d)`` right singular vectors ``V_m`` of the k described labels' vectors (uncentred: they keep dot products) and
output row ``j`` is ``(τ/√d) · V_m s_j/‖s_j‖``: the linear zero-shot coder restricted to the descriptions' main
subspace (identical to it when ``r ≥ k``). Bottleneck units beyond ``m`` keep their random first-layer rows and get
zero weight in the described labels' rows. Heads with a non-linear hidden layer (``"mlp"``, ``"deep_mlp"``,
``"deep_res_mlp"``) cannot read a description vector through their hidden layer: only public pre-training applies
to them (:func:`check_description_head` refuses ``init = "descriptions"``).

The chunk-sequence heads (:mod:`fedicd.heads_sequence`) read a description as a one-chunk note (the run's scaler
is fitted on chunk rows, so a description vector lives in the chunks' space; Text2Node's idea of notes and codes
in one space). ``"label_attention"``: each description goes through the head's initial value layer (no dropout),
``h_l = ReLU(W_h s_l + b_h) ∈ R^{d_h}`` (``s_l`` after the input layer, ``train.input_norm``); output row
``β_l = (τ/√d_h)·h_l/‖h_l‖`` with bias ``−τ·c`` (the linear zero-shot coder in the value layer's space: a
one-chunk note ``x`` scores ``(τ/√d_h)·⟨h(x), h_l⟩/‖h_l‖ − τ·c = τ·(cos(h(x), h_l)·‖h(x)‖/√d_h − c)``; under
PyTorch's default initialisation a standardised chunk has ``‖h(x)‖ ≈ √(d_h/6)`` (measured 0.408·√d_h at d = 24 …
768), so the initial logit is ``≈ τ·(0.41·cos − c)``, a flatter start than the linear coder's); attention query ``U_l = κ·Z(h_l)/‖Z(h_l)‖`` with ``Z(h) = tanh(W h + w₀)`` under the head's
initial ``W`` and ``κ = τ/√d_a``: a chunk with value-layer output ``h`` scores
``τ·cos(Z(h), Z(h_l))·‖Z(h)‖/√d_a`` (``√d_a`` bounds a tanh vector's norm, so at most ``τ`` times the cosine: the
chunks most like the description get code ``l``'s attention, on the logits' own scale). A description whose
``h_l`` is all zero (no active hidden unit after the ReLU) has no direction: its label keeps its seeded random
query and row, and is reported (a warning, ``"no_active_hidden_unit"`` and ``"missing"`` in the record).
``"multires_cnn"``: each description passes through the (initial) convolution stack as a one-chunk sequence,
``r_l ∈ R^{F·K}``; the query is ``U_l = (τ/√(F·K))·r_l/‖r_l‖`` (κ = τ/√(F·K), the same bound) and the output row
is the same vector with bias ``−τ·c``. Labels without a description keep their seeded random query and row.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from fedicd.errors import ConfigError
from fedicd.heads import output_layer
from fedicd.heads_sequence import LabelAttention, MultiResCNN
from fedicd.federated.model import server_scores
from fedicd.train_config import TrainConfig
from fedicd.warm_start.config import DESCRIPTION_HEADS, WarmStartConfig
from fedicd.warm_start.descriptions import DescribedLabels

__all__ = ["check_description_head", "zero_shot_rows", "apply_descriptions", "zero_shot_scores"]

log = logging.getLogger(__name__)


def check_description_head(train: TrainConfig) -> None:
    """Refuse ``warm_start.init = "descriptions"`` for a head that cannot hold the zero-shot coder."""
    if train.head not in DESCRIPTION_HEADS:
        raise ConfigError(f"warm_start.init = 'descriptions' needs train.head in {list(DESCRIPTION_HEADS)} (a head "
                          f"whose output layer reads a linear image of the embedding, or features a description "
                          f"passes through as a one-chunk note); head {train.head!r} has a "
                          "non-linear hidden layer over the pooled note vector: set warm_start.init = 'random' "
                          "(public pre-training, warm_start.public_config, still applies) or train.head = 'linear'")
    if train.head == "bottleneck" and train.norm not in (None, "none"):
        raise ConfigError(f"warm_start.init = 'descriptions' with train.head = 'bottleneck' needs train.norm = "
                          f"'none' (a norm at the bottleneck breaks the projection), got {train.norm!r}")


def zero_shot_rows(vectors: np.ndarray, scale: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Output weights ``(τ/√d)·s_j/‖s_j‖`` and biases ``−τ·c`` for description vectors ``vectors`` [k, d]."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms <= 0).any():
        raise ValueError("a description vector is zero after scaling: it has no direction to score by")
    weights = scale / np.sqrt(vectors.shape[1]) * vectors / norms
    return weights.astype(np.float32), np.full(len(vectors), -scale * margin, dtype=np.float32)


def _linear(model: nn.Module, rows: np.ndarray, biases: np.ndarray, described: np.ndarray) -> None:
    out = output_layer(model)
    with torch.no_grad():
        out.weight[torch.as_tensor(described)] = torch.as_tensor(rows)
        out.bias[torch.as_tensor(described)] = torch.as_tensor(biases)


def _bottleneck(model: nn.Module, vectors: np.ndarray, ws: WarmStartConfig, described: np.ndarray) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 2:
        raise ValueError(f"a bottleneck head has two nn.Linear layers, found {len(linears)}")
    down, out = linears
    rank = down.out_features
    _, _, vt = np.linalg.svd(vectors.astype(np.float64), full_matrices=False)
    m = min(rank, vt.shape[0])
    projected = vectors @ vt[:m].T  # [k, m]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = np.zeros((len(vectors), rank))
    rows[:, :m] = ws.scale / np.sqrt(vectors.shape[1]) * projected / norms
    mask = torch.as_tensor(described)
    with torch.no_grad():
        down.weight[:m] = torch.as_tensor(vt[:m], dtype=down.weight.dtype)
        out.weight[mask] = torch.as_tensor(rows, dtype=out.weight.dtype)
        out.bias[mask] = -ws.scale * ws.margin
    return m


def _unit_rows(vectors: torch.Tensor, scale: float, what: str) -> torch.Tensor:
    """``scale · v/‖v‖`` for each row of ``vectors``; a zero row (no direction) raises."""
    norms = vectors.norm(dim=1, keepdim=True)
    if (norms <= 0).any():
        raise ValueError(f"a description's {what} is zero: it has no direction to attend or score by")
    return scale * vectors / norms


def _label_attention(model: LabelAttention, vectors: np.ndarray, ws: WarmStartConfig,
                     described: np.ndarray) -> tuple[float, np.ndarray]:
    """Output rows ``(τ/√d_h)·h/‖h‖`` and queries ``(τ/√d_a)·Z(h)/‖Z(h)‖`` of the descriptions' value-layer outputs
    ``h``. Returns κ and, over the described labels, the mask of those with no active hidden unit (left as they are)."""
    with torch.no_grad():
        h = model.values(model.inp(torch.as_tensor(vectors, dtype=torch.float32)))  # [k, d_h], no dropout
        z = model.project(h)  # [k, d_a]
    active = (h > 0).any(dim=1)
    kappa = ws.scale / z.shape[1] ** 0.5
    written = described.copy()
    written[described] = active.numpy()
    mask = torch.as_tensor(written)
    with torch.no_grad():
        model.attention.weight[mask] = _unit_rows(z[active], kappa, "attention projection tanh(W h + w0)")
        model.out.weight[mask] = _unit_rows(h[active], ws.scale / h.shape[1] ** 0.5, "value-layer output")
        model.out.bias[mask] = -ws.scale * ws.margin
    return kappa, ~active.numpy()


def _report_inactive(info: dict, labels: DescribedLabels, inactive: np.ndarray) -> None:
    """Record (and warn about) the described labels whose value-layer output is all zero."""
    codes = [c for c, d in zip(labels.labels, labels.described) if d]
    dead = [c for c, off in zip(codes, inactive) if off]
    info["no_active_hidden_unit"] = dead
    if not dead:
        return
    info["described"] -= len(dead)
    info["missing"] = [c for c in labels.labels if c in set(labels.missing) | set(dead)]
    log.warning("warm_start: %d of %d described labels have no active hidden unit (their description's ReLU value "
                "layer output is all zero) and keep their random initialisation: %s%s", len(dead), len(codes),
                dead[:10], " …" if len(dead) > 10 else "")


def _multires_cnn(model: MultiResCNN, vectors: np.ndarray, ws: WarmStartConfig, described: np.ndarray) -> float:
    """Queries and output rows ``(τ/√(F·K))·r/‖r‖`` of the descriptions' conv features ``r``. Returns κ."""
    x = torch.as_tensor(vectors, dtype=torch.float32)[:, None, :]  # each description: a one-chunk note
    training = model.training
    model.eval()
    with torch.no_grad():
        r = model.features(x, torch.ones(x.shape[:2], dtype=torch.bool))[:, 0]  # [k, F·K]
    model.train(training)
    kappa = ws.scale / r.shape[1] ** 0.5
    rows = _unit_rows(r, kappa, "convolution features")
    mask = torch.as_tensor(described)
    with torch.no_grad():
        model.attention.weight[mask] = rows
        model.out.weight[mask] = rows
        model.out.bias[mask] = -ws.scale * ws.margin
    return kappa


def apply_descriptions(model: nn.Module, train: TrainConfig, labels: DescribedLabels, ws: WarmStartConfig) -> dict:
    """Write the zero-shot coder into ``model`` (in place); returns what was done, for the run's record.

    Rows of labels without a description are left as they are (the seeded random initialisation); they are listed
    under ``"missing"``. Chunk-sequence heads also get description queries; ``"query_scale"`` records κ. For
    ``"label_attention"``, ``"no_active_hidden_unit"`` lists the described labels whose value-layer output is all
    zero: they too keep their random rows, count as missing and not as described, and are warned about.
    """
    check_description_head(train)
    described = labels.described
    vectors = labels.vectors[described]
    info = {"described": int(described.sum()), "labels": len(labels.labels), "missing": list(labels.missing),
            "scale": ws.scale, "margin": ws.margin}
    if (np.linalg.norm(vectors, axis=1) <= 0).any():
        raise ValueError("a description vector is zero after scaling: it has no direction to score by")
    if train.head == "linear":
        _linear(model, *zero_shot_rows(vectors, ws.scale, ws.margin), described)
    elif train.head == "bottleneck":
        info["principal_directions"] = _bottleneck(model, vectors, ws, described)
    elif train.head == "label_attention":
        info["query_scale"], inactive = _label_attention(model, vectors, ws, described)
        _report_inactive(info, labels, inactive)
    else:
        info["query_scale"] = _multires_cnn(model, vectors, ws, described)
    return info


def zero_shot_scores(model: nn.Module, data: dict[str, np.ndarray]) -> dict[str, dict]:
    """Validation and test metrics of the warm-started ``model``, scored exactly like the final model
    (:func:`fedicd.federated.model.server_scores`)."""
    return server_scores(model, data)
