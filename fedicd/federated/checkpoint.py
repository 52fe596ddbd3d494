"""Per-round checkpoints of the server: global arrays, strategy state, history.

Written atomically (temporary file, then rename) after every round, so a
crashed run resumes from the last completed round with ``--resume``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT"]

CHECKPOINT = "checkpoint"


def save_checkpoint(run_dir: str | Path, *, server_round: int, arrays: dict[str, np.ndarray],
                    strategy_state: dict[str, np.ndarray], history: list[dict], rejections: list[dict]) -> None:
    d = Path(run_dir) / CHECKPOINT
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "arrays.tmp.npz"
    np.savez(tmp, **{f"model/{k}": v for k, v in arrays.items()},
             **{f"strategy/{k}": v for k, v in strategy_state.items()})
    tmp.replace(d / "arrays.npz")
    tmp_json = d / "state.tmp.json"
    tmp_json.write_text(json.dumps({"round": server_round, "history": history, "rejections": rejections}))
    tmp_json.replace(d / "state.json")


def load_checkpoint(run_dir: str | Path) -> dict | None:
    """The last checkpoint, or None when the run has none."""
    d = Path(run_dir) / CHECKPOINT
    if not (d / "state.json").exists() or not (d / "arrays.npz").exists():
        return None
    state = json.loads((d / "state.json").read_text())
    with np.load(d / "arrays.npz") as z:
        model = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("model/")}
        strategy = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("strategy/")}
    return {"round": state["round"], "history": state["history"], "rejections": state["rejections"],
            "arrays": model, "strategy_state": strategy}
