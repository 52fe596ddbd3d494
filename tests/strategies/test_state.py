"""strategy_state / load_strategy_state: a fresh strategy plus the saved state continues identically."""

from __future__ import annotations

import io

import numpy as np
import pytest

from fedicd.strategies import (
    DELTA_CONTROL_KEY,
    build_strategy,
    load_strategy_state,
    strategy_state,
)

from .helpers import arrays_record, configure, numpy_of, reply

N = 3
INITIAL = {"layer.weight": np.zeros((2, 3), np.float32), "layer.bias": np.zeros(2, np.float32)}


def _build(name: str):
    return build_strategy(name, min_available_nodes=N, min_train_nodes=N, eta=0.1, server_momentum=0.5)


def _replies(msgs, server_round: int, with_delta: bool):
    rng = np.random.default_rng(server_round)
    out = []
    for i, msg in enumerate(msgs):
        update = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in INITIAL.items()}
        extra = {DELTA_CONTROL_KEY: arrays_record({k: rng.normal(size=v.shape).astype(np.float32)
                                                   for k, v in INITIAL.items()})} if with_delta else None
        out.append(reply(msg, update, 10 * (i + 1), extra=extra))
    return out


def _round(strategy, arrays: dict, server_round: int, name: str) -> dict:
    msgs = configure(strategy, arrays, n_nodes=N, server_round=server_round)
    new, _ = strategy.aggregate_train(server_round, _replies(msgs, server_round, name == "scaffold"))
    return numpy_of(new)


def _npz_round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        return {k: loaded[k] for k in loaded.files}


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold"])
def test_resume_from_saved_state_gives_the_same_next_aggregates(name: str) -> None:
    # prepare: an uninterrupted run of three rounds
    original = _build(name)
    arrays = _round(original, INITIAL, 1, name)
    saved_arrays, saved_state = dict(arrays), _npz_round_trip(strategy_state(original))
    for server_round in (2, 3):
        arrays = _round(original, arrays, server_round, name)
    # execute: a fresh strategy resumes after round 1 from the checkpoint
    resumed = _build(name)
    load_strategy_state(resumed, saved_state)
    resumed_arrays = saved_arrays
    for server_round in (2, 3):
        resumed_arrays = _round(resumed, resumed_arrays, server_round, name)
    # assert: bit-identical model and identical state
    assert all(np.array_equal(arrays[k], resumed_arrays[k]) for k in arrays)
    final, final_resumed = strategy_state(original), strategy_state(resumed)
    assert final.keys() == final_resumed.keys()
    assert all(np.array_equal(final[k], final_resumed[k]) for k in final)


def test_resume_without_state_differs_for_stateful_strategies() -> None:
    # guards the test above: FedAdam's moments do change the next step
    original = _build("fedadam")
    arrays = _round(original, INITIAL, 1, "fedadam")
    fresh = _build("fedadam")
    assert not np.array_equal(_round(original, arrays, 2, "fedadam")["layer.bias"],
                              _round(fresh, arrays, 2, "fedadam")["layer.bias"])


def test_state_contents() -> None:
    assert strategy_state(_build("fedavg")) == {} and strategy_state(_build("fedprox")) == {}
    adam = _build("fedadam")
    _round(adam, INITIAL, 1, "fedadam")
    assert set(strategy_state(adam)) == {f"fedopt/{field}/{k}" for field in ("m_t", "v_t", "current_arrays")
                                         for k in INITIAL}
    scaffold = _build("scaffold")
    _round(scaffold, INITIAL, 1, "scaffold")
    state = strategy_state(scaffold)
    assert set(state) == {f"scaffold/c/{k}" for k in INITIAL}
    state["scaffold/c/layer.bias"][:] = 123.0  # a copy: the strategy is not affected
    assert not (scaffold.strategy.control["layer.bias"] == 123.0).any()


def test_loading_foreign_state_is_refused() -> None:
    with pytest.raises(ValueError, match="do not belong to FedAdam"):
        load_strategy_state(_build("fedadam"), {"scaffold/c/w": np.zeros(1)})
    with pytest.raises(ValueError, match="do not belong to FedAvg"):
        load_strategy_state(_build("fedavg"), {"fedopt/m_t/w": np.zeros(1)})
    load_strategy_state(_build("fedavg"), {})
