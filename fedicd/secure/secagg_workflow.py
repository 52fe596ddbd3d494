"""Flower's server-side SecAgg+ machinery, instrumented for one fedicd round.

* :class:`KeepAggregate`: the legacy FedAvg the workflow hands its result to; it samples every
  given node and keeps the workflow's (already averaged) aggregate as it is.
* :class:`ObservedSecAggPlus`: Flower's :class:`~flwr.server.workflow.SecAggPlusWorkflow`
  unchanged, recording after each stage how many clients are still in (and where it halted).
* :class:`MeteredGrid`: the grid, counting the bytes of every record sent and received.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Message
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow

__all__ = ["KeepAggregate", "MeteredGrid", "ObservedSecAggPlus", "content_bytes"]


class KeepAggregate(FedAvg):
    """Legacy FedAvg that samples every registered node and keeps the workflow's average as it is."""

    def __init__(self, n: int, config: dict) -> None:
        super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_evaluate_clients=0,
                         min_available_clients=n, on_fit_config_fn=lambda _rnd: dict(config))
        self.results: list | None = None
        self.failures: list = []

    def aggregate_fit(self, server_round, results, failures):
        # SecAggPlusWorkflow.unmask_stage has set every FitRes's parameters to the unmasked average.
        self.results, self.failures = list(results), list(failures)
        if not results:
            return None, {}
        return results[0][1].parameters, {}


class ObservedSecAggPlus(SecAggPlusWorkflow):
    """Flower's workflow unchanged; after each stage the number of clients still in is recorded."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trace: dict = {"active": {}, "halted_stage": None, "sampled": [], "aggregated": [],
                            "failures": [], "shares": None, "threshold": None}

    def _observe(self, stage: str, ok: bool, state) -> bool:
        self.trace["active"][stage] = len(state.active_node_ids)
        # Flower appends a stage-2 failure twice (two loops over the replies); keep each once
        self.trace["failures"] = list(dict.fromkeys(str(f) for f in state.failures))
        if stage == "setup":
            self.trace.update(sampled=sorted(state.sampled_node_ids), shares=state.num_shares,
                              threshold=state.threshold)
        if stage == "collect_masked_vectors":
            self.trace["aggregated"] = sorted(state.active_node_ids)
        if not ok:
            self.trace["halted_stage"] = stage
        return ok

    def setup_stage(self, grid, context, state) -> bool:
        return self._observe("setup", super().setup_stage(grid, context, state), state)

    def share_keys_stage(self, grid, context, state) -> bool:
        return self._observe("share_keys", super().share_keys_stage(grid, context, state), state)

    def collect_masked_vectors_stage(self, grid, context, state) -> bool:
        return self._observe("collect_masked_vectors", super().collect_masked_vectors_stage(grid, context, state),
                             state)

    def unmask_stage(self, grid, context, state) -> bool:
        return self._observe("unmask", super().unmask_stage(grid, context, state), state)


def _value_bytes(value: Any) -> int:
    if isinstance(value, (bytes, str)):
        return len(value.encode() if isinstance(value, str) else value)
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    return 8


def content_bytes(msg: Message) -> int:
    """Bytes of every record's values and keys (``ConfigRecord.count_bytes`` fails on empty lists in flwr 1.42)."""
    if not msg.has_content():
        return 0
    content = msg.content
    total = sum(r.count_bytes() for recs in (content.array_records, content.metric_records) for r in recs.values())
    return total + sum(len(k) + _value_bytes(v) for r in content.config_records.values() for k, v in r.items())


class MeteredGrid:
    """The grid, with the bytes of every record sent and received counted."""

    def __init__(self, grid) -> None:
        self._grid = grid
        self.sent = 0
        self.received = 0

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent += sum(content_bytes(m) for m in messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.received += sum(content_bytes(m) for m in replies)
        return replies

    def __getattr__(self, name):
        return getattr(self._grid, name)
