"""The names fedicd's SecAgg+ server round and client mod agree on: config keys, a metric key, the stages.

The server (:func:`fedicd.secure.secagg.secagg_train_round`) puts the ``*_KEY`` entries into the
train config; the client mod (:mod:`fedicd.secure.secagg_client`) reads them, strips them before
the train handler sees the config, and reports :data:`CLIPPED_KEY` in its ``FitRes`` metrics.
"""

from __future__ import annotations

__all__ = ["ARRAY_NAMES_KEY", "CLIPPED_KEY", "ROUNDING_SEED_KEY", "STAGES", "WEIGHT_KEY_KEY"]

ARRAY_NAMES_KEY = "secagg-array-names"  # config: the names of the arrays, in the order they are masked
WEIGHT_KEY_KEY = "secagg-weight-key"  # config: which reply metric weighs the client (default "num-examples")
ROUNDING_SEED_KEY = "secagg-rounding-seed"  # config: seeds the clients' stochastic rounding (reproducible sums)
CLIPPED_KEY = "secagg-clipped-entries"  # FitRes metric: entries the client's quantiser clipped
# the four stages of Flower's SecAggPlusWorkflow, in order (the keys of a round report's active_per_stage)
STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
