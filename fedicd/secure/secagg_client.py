"""The client side of SecAgg+: Flower's ``secaggplus_mod`` bridged to fedicd's Message-API train handler.

:func:`secaggplus_client_mod` (first in ``@app.train(mods=[...])``) runs Flower's
:func:`~flwr.client.mod.secaggplus_mod` on the SecAgg+ messages and passes every other message
through. In the masking stage the mod calls the train handler with a legacy ``fitins`` message and
expects a legacy ``fitres`` reply; the mod's ``call_next`` is bridged so that fedicd's Message-API
handler sees its usual ``{"arrays", "config"}`` message and its ``{"arrays", "metrics"}`` reply is
handed to the mod as ``FitRes`` (parameters in the order of the server's array names,
``num_examples`` = the weight metric). The bridge counts the entries the quantiser will clip
(``secagg-clipped-entries``; see :mod:`fedicd.secure.secagg_config`).

Stochastic rounding uses numpy's global RNG on the client; the server's rounding seed makes it,
and so the aggregate, reproducible (masks cancel exactly anyway).

Distributed DP (:mod:`fedicd.privacy.distributed_dp`): when the train config carries a clipping norm and a
noise share std, the bridge masks not the trained model but its clipped update plus this client's Gaussian
noise share, with unit weight, and withholds every plaintext metric but the client's id, weight and clip count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message.message import make_message
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE
from flwr.compat.common import recorddict_compat as compat

from fedicd.privacy import distributed_dp as ddp
from fedicd.secure.secagg_config import SecAggPlusConfig
from fedicd.secure.secagg_messages import ARRAY_NAMES_KEY, CLIPPED_KEY, ROUNDING_SEED_KEY, WEIGHT_KEY_KEY

__all__ = ["SecAggClientError", "secaggplus_client_mod"]

log = logging.getLogger(__name__)

_SCALARS = (bool, int, float, str, bytes)


class SecAggClientError(ValueError):
    """A client's train reply cannot be securely aggregated (raised on the client, so it drops out)."""


def secaggplus_client_mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Flower's ``secaggplus_mod`` on SecAgg+ train messages, bridged to a Message-API train handler.

    Put it first in ``@app.train(mods=[secaggplus_client_mod, ...])``: mods after it (e.g. client-side
    clipping) and the handler see an ordinary ``{"arrays", "config"}`` train message. Messages without
    SecAgg+ configs (plain rounds) pass through untouched.

    Flower's quantiser rounds stochastically with numpy's global RNG; when the server sends a rounding seed
    (:func:`~fedicd.secure.secagg.secagg_train_round`'s ``rounding_seed``) that RNG is seeded from
    (seed, partition-id) for the masking stage and restored afterwards, so the unmasked sum is reproducible
    (the masks, drawn from private random seeds, cancel exactly whatever they are).
    """
    if not msg.has_content() or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    rng_state = np.random.get_state()
    try:
        return secaggplus_mod(msg, context, _bridge(call_next))
    finally:
        np.random.set_state(rng_state)


def _bridge(call_next: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    def bridged(msg: Message, context: Context) -> Message:
        params = msg.content.array_records["fitins.parameters"]
        fit_cfg = msg.content.config_records["fitins.config"]
        names = [str(n) for n in fit_cfg.get(ARRAY_NAMES_KEY, [])]
        ndarrays = parameters_to_ndarrays(compat.arrayrecord_to_parameters(params, keep_input=True))
        if len(names) != len(ndarrays):
            raise SecAggClientError(f"the SecAgg+ train message names {len(names)} arrays but carries "
                                    f"{len(ndarrays)} (config key {ARRAY_NAMES_KEY!r} missing?)")
        weight_key = str(fit_cfg.get(WEIGHT_KEY_KEY, "num-examples"))
        ours = (ARRAY_NAMES_KEY, WEIGHT_KEY_KEY, ROUNDING_SEED_KEY, *ddp.CLIENT_KEYS)
        config = ConfigRecord({k: v for k, v in fit_cfg.items() if k not in ours})
        arrays = ArrayRecord(array_dict={n: Array(np.ascontiguousarray(a)) for n, a in zip(names, ndarrays)})
        inner = make_message(metadata=msg.metadata, content=RecordDict({"arrays": arrays, "config": config}))
        reply = call_next(inner, context)
        if reply.has_error():
            raise SecAggClientError(f"the train handler replied with an error: {reply.error.reason}")
        shapes = {n: a.shape for n, a in zip(names, ndarrays)}
        who = int(context.node_config.get("partition-id", msg.metadata.dst_node_id))
        content = _to_fitres(reply.content, shapes, weight_key, context, _noiser(fit_cfg, ndarrays, who))
        if ROUNDING_SEED_KEY in fit_cfg:  # the mod quantises right after this returns
            np.random.seed(int(np.random.SeedSequence([int(fit_cfg[ROUNDING_SEED_KEY]), who]).generate_state(1)[0]))
        return Message(content, reply_to=msg)

    return bridged


def _noiser(fit_cfg: ConfigRecord, global_arrays: list[np.ndarray], who: int):
    """Under distributed DP, ``trained arrays -> clipped update + noise share``; else None."""
    if ddp.CLIP_KEY not in fit_cfg:
        return None
    clip, share_std = float(fit_cfg[ddp.CLIP_KEY]), float(fit_cfg[ddp.SHARE_STD_KEY])
    seed = int(fit_cfg[ddp.SEED_KEY]) if ddp.SEED_KEY in fit_cfg else None
    rng = ddp.share_rng(seed, int(fit_cfg.get("server-round", 0)), who)

    def noised(trained: list[np.ndarray]) -> list[np.ndarray]:
        return ddp.privatise_update(global_arrays, trained, clip, share_std, rng)[0]

    return noised


def _to_fitres(content: RecordDict, shapes: dict[str, tuple], weight_key: str, context: Context,
               noised: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None) -> RecordDict:
    names = list(shapes)
    extra = [k for k in content.array_records if k != "arrays"]
    if extra or "arrays" not in content.array_records:
        raise SecAggClientError(f"SecAgg+ aggregates exactly one ArrayRecord 'arrays'; the reply holds "
                                f"{sorted(content.array_records)} (e.g. SCAFFOLD controls cannot be sent this way)")
    record = content.array_records["arrays"]
    if sorted(record) != sorted(names):
        raise SecAggClientError(f"the reply's arrays {sorted(record)[:5]}... differ from the global model's "
                                f"{sorted(names)[:5]}...")
    ndarrays = [record[n].numpy() for n in names]
    for name, a in zip(names, ndarrays):
        if a.shape != shapes[name]:
            raise SecAggClientError(f"array {name!r} has shape {a.shape}, the global model's is {shapes[name]}")
        if not np.all(np.isfinite(a)):
            raise SecAggClientError(f"array {name!r} holds non-finite values; refusing to mask it into the sum")
    metrics: dict[str, Any] = {}
    for rec in content.metric_records.values():
        metrics.update({k: v for k, v in rec.items() if isinstance(v, _SCALARS)})
    if weight_key not in metrics:
        raise SecAggClientError(f"the reply's metrics lack the weight {weight_key!r}")
    if noised is not None:  # distributed DP: mask the noised update, with unit weight and no plaintext metrics
        ndarrays = noised(ndarrays)
        metrics = {weight_key: 1.0, **{k: metrics[k] for k in ("partition-id",) if k in metrics}}
    weight = metrics[weight_key]
    state = context.state.config_records[RECORD_KEY_STATE]  # written by secaggplus_mod's setup stage
    sa = SecAggPlusConfig(max_weight=float(state["max_weight"]), clipping_range=float(state["clipping_range"]),
                          quantization_range=int(state["target_range"]), modulus_range=int(state["mod_range"]))
    if not 0 < weight <= sa.max_weight:
        raise SecAggClientError(f"client weight {weight_key} = {weight} is outside (0, max_weight = "
                                f"{sa.max_weight:g}]; raise secure_aggregation.max_weight")
    dq = sa.weight_factor(weight)
    clipped = int(sum(np.count_nonzero(~(np.abs(a.astype(np.float64) * dq) <= sa.clipping_range))
                      for a in ndarrays))
    if clipped:
        log.warning("SecAgg+: %d entries of this client's update exceed clipping_range %g after weighting by %g "
                    "and are clipped", clipped, sa.clipping_range, dq)
    metrics[CLIPPED_KEY] = clipped
    fitres = FitRes(status=Status(code=Code.OK, message="Success"), parameters=ndarrays_to_parameters(ndarrays),
                    num_examples=weight, metrics=metrics)
    return compat.fitres_to_recorddict(fitres, keep_input=False)

