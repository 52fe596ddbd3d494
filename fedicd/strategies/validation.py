"""UpdateValidator: drop malformed or poisoned client replies before any strategy averages them.

A wrapper by composition (like Flower's DP wrappers): it holds any
:class:`~flwr.serverapp.strategy.Strategy` and delegates every call, filtering
the replies given to ``aggregate_train`` / ``aggregate_evaluate``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedicd.federated.records import decode_array

__all__ = ["UpdateValidator"]

logger = logging.getLogger(__name__)


class UpdateValidator(Strategy):
    """Reject client replies that must never be averaged, then delegate.

    A train reply is rejected (and logged with its node id and the reason) when
    its model ArrayRecord is missing; its array names or shapes differ from the
    global arrays sent in ``configure_train``; any of its ArrayRecords holds NaN or
    Inf; it carries an ArrayRecord other than the model's and ``extra_array_keys``;
    it does not carry exactly one MetricRecord; that record's weight
    (``"num-examples"``) is missing, not a number, non-finite or ``<= 0``; or its
    metric names differ from those of most other replies (Flower would otherwise
    refuse the whole round). Client errors (``msg.has_error()``) are recorded as
    ``"client error: ..."`` and passed on so the inner strategy logs them too.
    Valid replies are sorted by the clients' ``"partition-id"`` metric when they
    report one (stable across runs and resumes; node ids are drawn anew by each
    simulation), else by node id, so the aggregate does not depend on arrival
    order, bit for bit.

    Parameters
    ----------
    strategy : Strategy
        The strategy to protect (FedAvg, FedAdam, Scaffold, ...).
    extra_array_keys : tuple[str, ...]
        ArrayRecords allowed besides the model's (e.g. SCAFFOLD's control delta).
        They are checked for NaN/Inf only; the inner strategy checks their shapes.

    Attributes
    ----------
    rejections : list[dict]
        One ``{"round", "node_id", "reason", "stage"}`` entry per rejected reply or
        client error, ``stage`` being ``"train"`` or ``"evaluate"``.
    """

    def __init__(self, strategy: Strategy, *, extra_array_keys: tuple[str, ...] = ()) -> None:
        self.strategy = strategy
        self.extra_array_keys = tuple(extra_array_keys)
        self.arrayrecord_key: str = getattr(strategy, "arrayrecord_key", "arrays")
        self.weighted_by_key: str = getattr(strategy, "weighted_by_key", "num-examples")
        self.rejections: list[dict] = []
        self._reference: dict[str, tuple[int, ...]] | None = None

    def summary(self) -> None:
        """Log the wrapper, then the inner strategy's summary."""
        logger.info("UpdateValidator wrapping %s", type(self.strategy).__name__)
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the names and shapes of the global arrays, then delegate."""
        self._reference = {name: tuple(array.shape) for name, array in arrays.items()}
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop invalid replies; ``(None, None)`` when no valid reply remains."""
        valid, errors = self._filter(server_round, replies, stage="train")
        if not valid and getattr(self.strategy, "releases_without_replies", False):
            return self.strategy.aggregate_train(server_round, errors)  # client-level DP's noise-only release
        if not valid:
            logger.warning("round %d: no valid train reply left; keeping the previous model", server_round)
            return None, None
        return self.strategy.aggregate_train(server_round, valid + errors)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Drop replies with a bad weight or metric layout; ``None`` when none remains."""
        valid, errors = self._filter(server_round, replies, stage="evaluate")
        if not valid:
            return None
        return self.strategy.aggregate_evaluate(server_round, valid + errors)

    # ------------------------------------------------------------------ checks
    def _filter(self, server_round: int, replies: Iterable[Message], *, stage: str) -> tuple[list, list]:
        replies = list(replies)
        errors = [m for m in replies if m.has_error()]
        for msg in errors:
            self._reject(server_round, msg, f"client error: {msg.error.reason}", stage)
        answered = [m for m in replies if not m.has_error()]
        if stage == "evaluate":  # a client without validation notes (partition.client_validation) has no score
            scored = [m for m in answered if not self._holds_no_examples(m)]
            if len(scored) < len(answered):
                logger.info("round %d: %d client(s) hold no validation notes; their evaluation replies carry no "
                            "score", server_round, len(answered) - len(scored))
            answered = scored
        valid = []
        for msg in answered:
            reason = self._check_metrics(msg) or (self._check_arrays(msg) if stage == "train" else None)
            if reason is None:
                valid.append(msg)
            else:
                self._reject(server_round, msg, reason, stage)
        valid = self._drop_odd_metric_layouts(server_round, valid, stage)
        return sorted(valid, key=_reply_order), errors

    def _reject(self, server_round: int, msg: Message, reason: str, stage: str) -> None:
        node_id = msg.metadata.src_node_id
        logger.warning("round %d: rejected %s reply from node %s: %s", server_round, stage, node_id, reason)
        self.rejections.append({"round": server_round, "node_id": node_id, "reason": reason, "stage": stage})

    def _holds_no_examples(self, msg: Message) -> bool:
        records = list(msg.content.metric_records.values())
        return len(records) == 1 and records[0].get(self.weighted_by_key) == 0

    def _check_metrics(self, msg: Message) -> str | None:
        records = list(msg.content.metric_records.values())
        if len(records) != 1:
            return f"expected exactly one MetricRecord, got {len(records)}"
        weight = records[0].get(self.weighted_by_key)
        if weight is None:
            return f"missing metric {self.weighted_by_key!r}"
        if isinstance(weight, (list, bool)) or not math.isfinite(weight) or weight <= 0:
            return f"{self.weighted_by_key!r} must be a finite number > 0, got {weight!r}"
        return None

    def _check_arrays(self, msg: Message) -> str | None:
        content = msg.content
        if self.arrayrecord_key not in content.array_records:
            return f"missing ArrayRecord {self.arrayrecord_key!r}"
        unexpected = set(content.array_records) - {self.arrayrecord_key, *self.extra_array_keys}
        if unexpected:
            return f"unexpected ArrayRecord(s) {sorted(unexpected)}"
        reason = self._check_names_and_shapes(content.array_records[self.arrayrecord_key])
        if reason is not None:
            return reason
        for key, record in content.array_records.items():
            for name, array in record.items():
                values = decode_array(array, copy=False)  # a read-only view of the reply's bytes: no copy
                if values.dtype.kind in "fc" and not np.isfinite(values).all():
                    return f"non-finite values (NaN/Inf) in {key}[{name!r}]"
        return None

    def _check_names_and_shapes(self, record: ArrayRecord) -> str | None:
        if self._reference is None:  # aggregate_train called without configure_train
            return None
        missing, extra = set(self._reference) - set(record), set(record) - set(self._reference)
        if missing or extra:
            return f"array names differ from the global model: missing {sorted(missing)}, unexpected {sorted(extra)}"
        for name, shape in self._reference.items():
            if tuple(record[name].shape) != shape:
                return f"array {name!r} has shape {tuple(record[name].shape)}, expected {shape}"
        return None

    def _drop_odd_metric_layouts(self, server_round: int, valid: list[Message], stage: str) -> list[Message]:
        """Keep replies whose metric names match the most common set (Flower needs them equal)."""
        layouts = [frozenset(next(iter(m.content.metric_records.values())).keys()) for m in valid]
        if len(set(layouts)) <= 1:
            return valid
        common = Counter(layouts).most_common(1)[0][0]
        for msg, layout in zip(valid, layouts, strict=True):
            if layout != common:
                self._reject(server_round, msg, f"metric names {sorted(layout)} differ from {sorted(common)}", stage)
        return [m for m, layout in zip(valid, layouts, strict=True) if layout == common]


def _reply_order(msg: Message) -> tuple[float, int]:
    """Sort key: the client's partition id when reported, then the node id."""
    metrics = next(iter(msg.content.metric_records.values()), None)
    pid = metrics.get("partition-id") if metrics is not None else None
    return (float(pid) if isinstance(pid, (int, float)) else float("inf"), msg.metadata.src_node_id)
