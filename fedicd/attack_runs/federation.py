"""A finished federated run as the attacks on the federation read it (the defender's side of the battery).

The battery (``fedicd audit``, ``experiments/privacy_matrix.py``) attacks one
run folder written by ``fedicd run`` in federated mode. :func:`load_federation_run`
reads what that folder holds: the run plan (head, local training, privacy and
secure-aggregation plans), the staged features (already scaled by the one shared
StandardScaler, as the paper fits it on all training embeddings: the training
split reassembled from every client's file, the server's evaluation notes), the
clients' training rows, the scaler statistics and the final global model. It is
the researcher's view (:func:`fedicd.federated.staged.load_staged_splits`), which
no federation process holds.

Nothing here is handed to an attack as such: each attack's glue builds the
adversary's view (:mod:`attacks`) from it, with exactly what its threat model
allows, and keeps the truth (which rows a client holds, the raw vectors) on the
scoring side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedicd.errors import ConfigError

__all__ = ["FederationRun", "load_federation_run"]


@dataclass
class FederationRun:
    """A finished federated run.

    Attributes
    ----------
    run_dir : Path
        The run folder.
    plan : fedicd.run_plan.RunPlan
        Everything staging fixed: ``plan.train`` (head, optimiser, batch size),
        ``plan.federated`` (rounds, local epochs), ``plan.privacy`` (per-client
        :class:`~fedicd.run_plan.DPPlan` schedules, or the client-level plan),
        ``plan.secure``, ``plan.input_dim``, ``plan.n_labels``.
    features : dict
        ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test``, ``y_test``:
        scaled features and label matrices as staged (float32 / 0-1); validation and
        test come from the server's ``server/eval.npz`` (without server evaluation:
        no test split, see :func:`~fedicd.federated.staged.load_staged_splits`).
    clients : list of arrays
        Row indices into ``x_train`` of each client's training notes.
    scaler_mean, scaler_scale : arrays [dim]
        The shared StandardScaler's statistics (``x_scaled = (x - mean) / scale``).
    final_state : dict
        The final global model's state dict as numpy arrays (decrypted under CKKS).
    """

    run_dir: Path
    plan: object
    features: dict[str, np.ndarray]
    clients: list[np.ndarray]
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    final_state: dict[str, np.ndarray]
    results: dict = field(default_factory=dict)

    @property
    def dp(self) -> str:
        """``"none"``, ``"sample"`` or ``"client"``."""
        return self.plan.privacy.dp

    def client_rows(self, partition_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Scaled features and labels of client ``partition_id``'s training notes."""
        if not 0 <= partition_id < len(self.clients):
            raise ValueError(f"partition_id {partition_id} is outside the run's {len(self.clients)} clients")
        idx = self.clients[partition_id]
        return self.features["x_train"][idx], self.features["y_train"][idx]

    def unscale(self, x_scaled: np.ndarray) -> np.ndarray:
        """Raw embedding vectors from scaled ones (inverse of the shared scaler)."""
        return (np.asarray(x_scaled, dtype=np.float64) * self.scaler_scale + self.scaler_mean).astype(np.float32)

    def build_head(self, state: dict[str, np.ndarray] | None = None):
        """The run's head (``plan.train``) holding ``state`` (default: the final global model)."""
        from fedicd.federated.model import load_global_model

        return load_global_model(self.plan.train, self.plan.input_dim, self.plan.n_labels,
                                 self.final_state if state is None else state)


def _scaler(run_dir: Path, features: dict[str, np.ndarray], plan) -> tuple[np.ndarray, np.ndarray]:
    path = run_dir / "scaler.npz"
    if path.exists():
        with np.load(path) as z:
            return z["mean"], z["scale"]
    from fedicd.attack_runs.data import embed
    from fedicd.config import config_from_dict
    from fedicd.prepare import prepare_data

    cfg = config_from_dict(plan.config)
    data = prepare_data(cfg)
    from sklearn.preprocessing import StandardScaler

    # a run staged before staging kept scaler.npz: refit the pipeline's own scaler on the training embeddings
    scaler = StandardScaler().fit(embed([data.notes.texts[i] for i in data.parts["train"]], cfg))
    return scaler.mean_, scaler.scale_


def _refuse_chunk_sequences(run_dir: Path, head: str) -> None:
    """The attacks read one pooled vector per note (``x_train[rows]``, ``unscale``, a head taking ``[B, d]``): a
    run of a chunk-sequence head stages flat chunk rows with offsets, which they would mis-read as notes."""
    from fedicd.federated.site_data import client_data_path
    from fedicd.heads import SEQUENCE_HEADS

    staged = client_data_path(run_dir, 0)
    chunked = False
    if staged.exists():
        with np.load(staged) as z:
            chunked = any(k.endswith("_offsets") for k in z.files)
    if head in SEQUENCE_HEADS or chunked:
        raise ConfigError(f"the attacks on a federation read one pooled vector per note, but the run folder "
                          f"{run_dir} trained train.head = {head!r} on chunk sequences (its staged client files "
                          f"such as {staged.relative_to(run_dir)} hold chunk rows and offsets): attack a run of a "
                          "pooled head (mlp, deep_mlp, deep_res_mlp, linear, bottleneck)")


def load_federation_run(run_dir: str | Path) -> FederationRun:
    """Read a finished federated run folder (``FileNotFoundError`` / ``ValueError`` naming what is missing)."""
    import json

    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.federated.staged import load_staged_splits
    from fedicd.run_plan import read_plan
    from fedicd.secure.round_defences import driver_key, round_aggregator

    run_dir = Path(run_dir)
    plan = read_plan(run_dir)
    _refuse_chunk_sequences(run_dir, plan.train.head)
    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint: the federated run never finished a round")
    if ckpt["round"] < plan.federated.rounds:
        raise ValueError(f"{run_dir} stopped after round {ckpt['round']} of {plan.federated.rounds}; resume it "
                         "(fedicd run ... --resume) before attacking it")
    splits = load_staged_splits(run_dir)  # the researcher's view: every client's file and partition.json
    features = {k: v for k, v in splits.items() if k.startswith(("x_", "y_"))}
    state = round_aggregator(plan, secret_path=driver_key(plan.secure)).readable(ckpt["arrays"])
    mean, scale = _scaler(run_dir, features, plan)
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    return FederationRun(run_dir, plan, features, [np.asarray(c) for c in splits["clients"]], np.asarray(mean),
                         np.asarray(scale), {k: np.asarray(v) for k, v in state.items()}, results)
