"""SCAFFOLD [Karimireddy et al., 2020]: server strategy holding the control variate ``c``.

Paper: https://arxiv.org/abs/1910.06378 (Algorithm 1). Flower has no SCAFFOLD, so the
server half is written here on top of Flower's FedAvg; the client half (gradient
correction and the "option I" control) lives in :mod:`fedicd.strategies.scaffold_client`
and is re-exported here.

Protocol per round:

* server -> client: the model under ``"arrays"`` and ``c`` under :data:`SERVER_CONTROL_KEY`;
* client: trains with corrected gradients ``g - c_i + c``, computes ``c_i^+`` and replies
  with its model under ``"arrays"`` and ``delta_c_i = c_i^+ - c_i`` under
  :data:`DELTA_CONTROL_KEY` (it keeps ``c_i`` in its own state);
* server: model = ``"num-examples"``-weighted mean of the clients' ``"arrays"`` (global
  learning rate 1, as FedAvg), ``c <- c + (|S| / N) * mean_i(delta_c_i)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from ._params import Sampling
from .keys import DELTA_CONTROL_KEY, SERVER_CONTROL_KEY
from .scaffold_client import (
    control_from_arrayrecord,
    control_to_arrayrecord,
    scaffold_client_control,
    scaffold_correct_gradients_,
)

__all__ = [
    "DELTA_CONTROL_KEY",
    "SERVER_CONTROL_KEY",
    "Scaffold",
    "build_scaffold",
    "control_from_arrayrecord",
    "control_to_arrayrecord",
    "scaffold_client_control",
    "scaffold_correct_gradients_",
]

logger = logging.getLogger(__name__)


class Scaffold(FedAvg):
    """SCAFFOLD server: FedAvg model averaging plus the server control variate.

    Parameters
    ----------
    **fedavg_kwargs : Any
        Keyword arguments of Flower's ``FedAvg`` (fractions, minimum node counts,
        ``weighted_by_key``, ``arrayrecord_key``, ...).

    Attributes
    ----------
    control : dict[str, numpy.ndarray] or None
        Server control ``c``, one array per floating model array (zeros on first
        use). Arrays the clients never send a delta for (e.g. BatchNorm running
        statistics, which are not trainable parameters) keep ``c = 0``.

    Notes
    -----
    The model average is weighted by ``"num-examples"`` (as the paper-reproduction
    FedAvg), whereas Algorithm 1 averages uniformly; the control update follows the
    paper: ``c <- c + (1/N) * sum_i delta_c_i``, with ``N`` the nodes available when
    the round was configured. Replies lacking a well-formed delta are dropped and logged.
    """

    def __init__(self, **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.control: dict[str, np.ndarray] | None = None
        self._num_nodes: int | None = None

    def summary(self) -> None:
        """Log the SCAFFOLD keys, then FedAvg's summary."""
        logger.info("SCAFFOLD: server control under %r, client deltas under %r", SERVER_CONTROL_KEY, DELTA_CONTROL_KEY)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes as FedAvg does and add ``c`` to every train message."""
        if self.control is None:
            self.control = {k: np.zeros_like(a.numpy()) for k, a in arrays.items() if a.numpy().dtype.kind == "f"}
        self._num_nodes = len(list(grid.get_node_ids()))
        messages = list(super().configure_train(server_round, arrays, config, grid))
        control = ArrayRecord({k: Array(v.copy()) for k, v in self.control.items()})
        for msg in messages:
            msg.content[SERVER_CONTROL_KEY] = control
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the clients' models and update ``c`` from the replies that carry a delta."""
        if self.control is None or self._num_nodes is None:
            raise RuntimeError("Scaffold.aggregate_train called before configure_train")
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        used = [m for m in valid if self._usable(server_round, m)]
        if not used:
            return None, None
        # Flower's aggregate_arrayrecords averages *every* ArrayRecord of a reply, so hand it
        # records that hold only the model arrays and the metrics carrying the weights.
        model_only = [
            RecordDict({self.arrayrecord_key: m.content[self.arrayrecord_key], **m.content.metric_records})
            for m in used
        ]
        arrays = aggregate_arrayrecords(model_only, self.weighted_by_key)
        metrics = self.train_metrics_aggr_fn(model_only, self.weighted_by_key)
        deltas = [m.content[DELTA_CONTROL_KEY] for m in used]
        self.control = _updated_control(self.control, deltas, self._num_nodes)
        return arrays, metrics

    def _usable(self, server_round: int, msg: Message) -> bool:
        """Whether a reply has the model arrays, one weighted MetricRecord and a delta shaped like ``c``."""
        reason = _reply_problem(msg.content, self.control or {}, self.arrayrecord_key, self.weighted_by_key)
        if reason is not None:
            node_id = msg.metadata.src_node_id
            logger.warning("round %d: SCAFFOLD dropped reply from node %s: %s", server_round, node_id, reason)
        return reason is None


def build_scaffold(sampling: Sampling) -> Scaffold:
    """Build the SCAFFOLD server strategy with the given node sampling.

    Parameters
    ----------
    sampling : Sampling
        Node-sampling settings.

    Returns
    -------
    Scaffold
        Its server control ``c`` is saved by ``strategy_state``.
    """
    return Scaffold(**sampling.kwargs())


def _updated_control(
    control: dict[str, np.ndarray], deltas: list[ArrayRecord], num_nodes: int
) -> dict[str, np.ndarray]:
    """``c + (|S| / N) * mean_i(delta_c_i)``; names absent from a delta count as zero."""
    used = len(deltas)
    if num_nodes < used:
        logger.warning("SCAFFOLD: %d replies but only %d nodes were available; using N=%d", used, num_nodes, used)
    scale = used / max(num_nodes, used)
    updated = {}
    for name, c in control.items():
        total = sum((d[name].numpy().astype(np.float64) for d in deltas if name in d), np.zeros(c.shape))
        updated[name] = (c + scale * (total / used)).astype(c.dtype)
    return updated


def _reply_problem(content: RecordDict, control: dict[str, np.ndarray], arrays_key: str, weight_key: str) -> str | None:
    if arrays_key not in content.array_records:
        return f"missing ArrayRecord {arrays_key!r}"
    if DELTA_CONTROL_KEY not in content.array_records:
        return f"missing control delta {DELTA_CONTROL_KEY!r}"
    metrics = list(content.metric_records.values())
    if len(metrics) != 1 or weight_key not in metrics[0]:
        return f"expected one MetricRecord holding {weight_key!r}"
    for name, array in content[DELTA_CONTROL_KEY].items():
        if name not in control:
            return f"control delta has unknown array {name!r}"
        if tuple(array.shape) != control[name].shape:
            return f"control delta {name!r} has shape {tuple(array.shape)}, expected {control[name].shape}"
    return None
