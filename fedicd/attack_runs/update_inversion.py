"""Update inversion against a federated run: the client's update made by fedicd's own training code, attacked.

The defender's side of :mod:`attacks.update_inversion`. A client's returned
weights come from fedicd's local training (:func:`fedicd.local_training.local_train`,
or under sample-level DP :class:`fedicd.privacy.dp_sgd.DPStepper` for one step and
:func:`fedicd.privacy.dp_local.dp_local_train` for an epoch, σ calibrated by
:func:`fedicd.privacy.accounting.plan_dp`); client-level DP clips the update with
Flower's ``compute_clip_model_update`` (the server's noise is added to the
released aggregate only, which this server does not need); SecAgg+ releases the
weighted average of the round's clients after Flower's quantisation
(``flwr.common.secure_aggregation.quantization``), CKKS the exact weighted
average to whoever holds the key. The attack sees an
:class:`attacks.update_inversion.UpdateView` built from that and nothing else;
the client's rows, texts and planted identifiers stay here, for scoring.

:func:`battery_update_inversion` attacks client 0 of a finished run
(:class:`fedicd.attack_runs.federation.FederationRun`) under the run's own plan.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from attacks.update_inversion import LocalRecipe, TrapConfig, UpdateView, craft_trap, score_views
from fedicd.errors import ConfigError
from fedicd.local_training import LocalTrainConfig, local_optimizer, local_train, round_lr
from fedicd.privacy.accounting import plan_dp
from fedicd.privacy.config import PrivacyConfig
from fedicd.privacy.dp_local import dp_local_train
from fedicd.privacy.dp_sgd import DPStepper
from fedicd.run_plan import DPPlan
from fedicd.train_config import TrainConfig

__all__ = ["RoundSetting", "DEFENCES", "client_update", "clip_update", "secagg_average", "weighted_average",
           "sample_dp", "observe_round", "run_material", "build_chain",
           "battery_update_inversion"]

log = logging.getLogger(__name__)

DEFENCES = ("none", "dp_sample", "dp_client", "secagg_plus", "ckks", "embedding_noise")


@dataclass(frozen=True)
class RoundSetting:
    """One attacked round: the clients' local recipe, the defence and whether the server sends trap weights.

    ``mode``: ``"step"`` (one local step on one batch) or ``"epoch"`` (one local epoch over the rows).
    ``epsilon``: sample-level DP's target ε (σ calibrated for ``dp_rounds`` rounds of one epoch over
    the client's rows at ``delta``); ``clip``: per-sample clip (``dp_sample``) or update clip
    (``dp_client``); ``noise_sigma``: embedding noise's σ on unit-norm raw vectors.
    """

    optimizer: str = "sgd"
    lr: float = 1e-3
    batch_size: int = 8
    mode: str = "step"
    defence: str = "none"
    trap: bool = False
    epsilon: float = 8.0
    clip: float = 1.0
    delta: float = 1e-5
    dp_rounds: int = 3
    noise_sigma: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("step", "epoch"):
            raise ConfigError(f"mode must be 'step' or 'epoch', got {self.mode!r}")
        if self.defence not in DEFENCES:
            raise ConfigError(f"defence must be one of {list(DEFENCES)}, got {self.defence!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.defence == "dp_sample" and not self.epsilon > 0:
            raise ConfigError(f"defence 'dp_sample' needs epsilon > 0, got {self.epsilon}")
        if self.batch_size < 1 or not self.lr > 0 or not self.clip > 0 or self.noise_sigma < 0:
            raise ConfigError(f"need batch_size >= 1, lr > 0, clip > 0, noise_sigma >= 0; got {self.batch_size}, "
                              f"{self.lr}, {self.clip}, {self.noise_sigma}")


def _model(train_cfg: TrainConfig, state: dict[str, np.ndarray]) -> torch.nn.Module:
    d, c = state["net.0.weight"].shape[1], state[sorted(k for k in state if k.endswith("weight"))[-1]].shape[0]
    with torch.random.fork_rng(devices=[]):
        model = train_cfg.build(d, c)
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
    return model


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


@functools.lru_cache(maxsize=64)
def sample_dp(setting: RoundSetting, n: int) -> tuple[PrivacyConfig, DPPlan]:
    """The DP-SGD config and plan of a client with ``n`` rows (σ from :func:`fedicd.privacy.accounting.plan_dp`)."""
    plan = plan_dp(n, setting.batch_size, setting.dp_rounds, 1, noise=0.0, target_epsilon=setting.epsilon,
                   delta=setting.delta)
    return PrivacyConfig(dp="sample", clip=setting.clip, target_epsilon=setting.epsilon, delta=setting.delta), plan


def client_update(state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, train_cfg: TrainConfig, *,
                  optimizer: str, lr: float, batch_size: int, seed: int,
                  dp: tuple[PrivacyConfig, DPPlan] | None = None, one_step: bool = False) -> dict[str, np.ndarray]:
    """The weights a client returns after training on ``(x, y)`` from ``state`` with fedicd's own code.

    Without ``dp``: :func:`local_train` for one epoch at ``lr`` in batches of ``batch_size`` (pass one batch of
    rows for one step). With ``dp``: one :class:`DPStepper` step on all of ``(x, y)`` (``one_step``) or
    :func:`dp_local_train` for one epoch of Poisson-sampled steps under the plan.
    """
    model = _model(train_cfg, state)
    cfg = dataclasses.replace(train_cfg, batch_size=batch_size)
    local = LocalTrainConfig(server_round=1, total_rounds=1, local_epochs=1, partition_id=0, seed=seed,
                             optimizer=optimizer, lr=lr)
    if dp is None:
        local_train(model, SimpleNamespace(x_train=x, y_train=y, x_val=x[:0], y_val=y[:0]), cfg, local)
    elif one_step:
        _dp_step(model, x, y, cfg, local, *dp)
    else:
        dp_local_train(model, x, y, cfg, local, dp[0], dp[1], [])
    return _state(model)


def _dp_step(model, x, y, cfg: TrainConfig, local: LocalTrainConfig, privacy: PrivacyConfig, plan: DPPlan) -> None:
    opt = local_optimizer(model, local.optimizer, local.lr, cfg.weight_decay, momentum=local.momentum)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(local.seed)
        stepper = DPStepper(model, opt, cfg.loss(), plan, clip=privacy.clip, clipping=privacy.clipping,
                            noise_generator=torch.Generator().manual_seed(local.seed + 12))
        try:
            model.train()
            stepper.step(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32))
        finally:
            stepper.close()


def clip_update(sent: dict[str, np.ndarray], returned: dict[str, np.ndarray], clip: float) -> dict[str, np.ndarray]:
    """Client-level DP's clipping of one update to norm ``clip`` (Flower's ``compute_clip_model_update``)."""
    from flwr.supercore.differential_privacy import compute_clip_model_update

    keys = list(sent)
    new = [np.array(returned[k], dtype=np.float64) for k in keys]
    compute_clip_model_update(new, [np.asarray(sent[k], dtype=np.float64) for k in keys], clip)
    return {k: v.astype(np.asarray(returned[k]).dtype) for k, v in zip(keys, new)}


def weighted_average(states: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
    """FedAvg's weighted average of returned weights (what a CKKS key holder decrypts)."""
    w = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    return {k: sum(wi * np.asarray(s[k], dtype=np.float64) for wi, s in zip(w, states)) for k in states[0]}


def secagg_average(states: list[dict[str, np.ndarray]], weights: list[float], *, clipping_range: float = 8.0,
                   quantization_range: int = 2**22, seed: int = 0) -> dict[str, np.ndarray]:
    """The average SecAgg+ releases: each client's ``dq_i x_i`` quantised stochastically by Flower's own
    ``quantize`` (``dq_i = round(n_i / max n * Q) / Q``), summed and divided by ``sum dq_i``."""
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    q = quantization_range
    dq = [round(n / max(weights) * q) / q for n in weights]
    keys = list(states[0])
    saved = np.random.get_state()
    np.random.seed(seed % 2**32)  # Flower's stochastic rounding draws from numpy's global generator
    try:
        total = {k: np.zeros_like(np.asarray(states[0][k], dtype=np.float64)) for k in keys}
        for d, s in zip(dq, states):
            parts = dequantize(quantize([d * np.asarray(s[k], dtype=np.float64) for k in keys],
                                        clipping_range, q), clipping_range, q)
            for k, p in zip(keys, parts):
                total[k] += p
    finally:
        np.random.set_state(saved)
    return {k: v / sum(dq) for k, v in total.items()}


def _noisy_rows(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Embedding noise on the client's raw vectors (:func:`attacks.defences.gaussian_noise`: unit rows plus
    N(0, σ²)), each row put back to its own norm so that the shared scaler still fits it; then re-scaled.
    Coordinates the scaler found constant (scale < 1e-6; MiniLM has a few) are left as they were: noise there
    would be blown up by 1/scale."""
    from attacks.defences import gaussian_noise

    raw = np.asarray(x, dtype=np.float64) * scale + mean
    noisy = gaussian_noise(raw, sigma, seed=seed) * np.linalg.norm(raw, axis=1, keepdims=True)
    out = np.where(scale < 1e-6, x, (noisy - mean) / np.maximum(scale, 1e-6))
    return out.astype(np.float32)


def _batches(n: int, setting: RoundSetting, max_rows: int) -> list[np.ndarray]:
    """Row sets each client trains on: consecutive batches covering up to ``max_rows`` rows (``step``), or all
    rows (``epoch``, or a client with fewer rows than a batch: its one local batch)."""
    if setting.mode == "epoch" or n <= setting.batch_size:
        return [np.arange(n)]
    order = np.random.default_rng(setting.seed).permutation(n)[:max(setting.batch_size, min(n, max_rows))]
    return [order[i:i + setting.batch_size] for i in range(0, len(order) - setting.batch_size + 1, setting.batch_size)]


def observe_round(state: dict[str, np.ndarray], clients: list[tuple[np.ndarray, np.ndarray]], train_cfg: TrainConfig,
                  setting: RoundSetting, *, scaler: tuple[np.ndarray, np.ndarray], aux_scaled: np.ndarray | None = None,
                  max_rows: int = 64, secagg: dict | None = None, dp: tuple[PrivacyConfig, DPPlan] | None = None
                  ) -> list[tuple[UpdateView, np.ndarray, list[tuple[int, int]]]]:
    """The server's views of the round(s) ``setting`` describes, each with the truth: the clean scaled rows trained
    on and their (client, row) indices.

    ``clients``: the attacked client's rows first, then (under ``secagg_plus`` / ``ckks``) the round's other clients,
    whose rows enter the aggregate but not the truth: only ``clients[0]`` is scored (the adversary's public stand-in
    may hold the other clients' notes). ``step`` attacks several one-batch updates (covering up to ``max_rows``
    rows), ``epoch`` one update.
    ``dp`` (a run's own DP-SGD config and plan) makes every client train under DP-SGD whatever the defence
    (a run may combine sample-level DP with secure aggregation); else ``dp_sample`` calibrates with :func:`sample_dp`.
    """
    aggregate = setting.defence in ("secagg_plus", "ckks")
    per_round = setting.batch_size * (len(clients) if aggregate else 1)  # samples behind one observed update
    target = per_round if aux_scaled is None else min(per_round, len(aux_scaled))  # a rarer share needs more rows
    sent = craft_trap(state, aux_scaled, TrapConfig(target_batch=target, seed=setting.seed)) if setting.trap else state
    if aggregate and len(clients) < 2:
        raise ConfigError(f"{setting.defence}: attacking the aggregate needs the round's clients (>= 2), got "
                          f"{len(clients)}")
    sets = [_batches(len(x), setting, max_rows) for x, _ in (clients if aggregate else clients[:1])]
    views = []
    for b in range(min(len(s) for s in sets)):
        returned, truth, rows, sizes = [], [], [], []
        for c, s in enumerate(sets):
            x, y = clients[c][0][s[b]], clients[c][1][s[b]]
            cdp = dp or (sample_dp(setting, len(clients[c][0])) if setting.defence == "dp_sample" else None)
            returned.append(_one_client(sent, x, y, train_cfg, setting, scaler, seed=setting.seed + 1000 * b + c,
                                        dp=cdp))
            if c == 0:
                truth, rows = [x], [(0, int(i)) for i in s[b]]
            sizes.append(len(clients[c][0]))
        views.append((_view(sent, returned, sizes, train_cfg, setting, scaler, secagg), np.concatenate(truth), rows))
    return views


def _one_client(sent, x, y, train_cfg, setting: RoundSetting, scaler, *, seed: int, dp=None) -> dict[str, np.ndarray]:
    if setting.defence == "embedding_noise":
        x = _noisy_rows(x, *scaler, setting.noise_sigma, seed)
    out = client_update(sent, x, y, train_cfg, optimizer=setting.optimizer, lr=setting.lr,
                        batch_size=setting.batch_size, seed=seed, dp=dp, one_step=setting.mode == "step")
    return clip_update(sent, out, setting.clip) if setting.defence == "dp_client" else out


def _view(sent, returned, sizes, train_cfg: TrainConfig, setting: RoundSetting, scaler, secagg) -> UpdateView:
    if setting.defence == "secagg_plus":
        out = secagg_average(returned, sizes, seed=setting.seed, **(secagg or {}))
    elif setting.defence == "ckks":
        out = weighted_average(returned, sizes)
    else:
        out = returned[0]
    recipe = LocalRecipe(setting.optimizer, setting.lr, train_cfg.weight_decay,
                         clip_norm=setting.clip if setting.defence == "dp_client" else None)
    return UpdateView(sent=sent, returned=out, n_clients=len(returned), scaler_mean=scaler[0],
                      scaler_scale=scaler[1], recipe=recipe)


def battery_update_inversion(run, *, seed: int = 0, quick: bool = False, **options) -> list:
    """Attack client 0's update of ``run`` under the run's own plan, from the final global model.

    One report per (mode, server): modes ``step`` (one local step on one batch; several batches covering up to
    64 rows are attacked and pooled) and ``epoch`` (one local epoch); servers ``curious`` (passive) and
    ``malicious`` (trap weights). Under SecAgg+ or CKKS the view is the average of all the run's clients.
    ``quick``: the ``step`` mode only and a small word inverter (seconds). Options: ``client`` (default 0),
    ``scaler`` (``"known"``: fedicd's shared scaler; ``"estimated"``: from the auxiliary notes),
    ``chain`` (default True: hand the vectors to the bag-of-words inverter).
    Raises :class:`ConfigError` when the head has no ``net.0`` first linear layer.
    """
    pid, scaler_mode = int(options.get("client", 0)), str(options.get("scaler", "known"))
    if "net.0.weight" not in run.final_state or "net.0.bias" not in run.final_state:
        raise ConfigError(f"update inversion reads the head's first linear layer net.0; head {run.plan.train.head!r} "
                          f"has {sorted(run.final_state)[:6]}")
    setting, dp, observed = _battery_setting(run, pid, seed)
    order = [pid] + ([c for c in range(len(run.clients)) if c != pid] if observed != "single client update" else [])
    clients = [run.client_rows(c) for c in order]  # the attacked client first: observe_round scores it alone
    material = run_material(run, pid) if options.get("chain", True) else None
    chain = None if material is None else build_chain(material, quick=quick, seed=seed)
    texts = None if material is None else _per_client(material, "train_texts", run, [pid])
    ids = None if material is None else _per_client(material, "identifiers", run, [pid])
    reports = []
    for mode in ("step",) if quick else ("step", "epoch"):
        for trap in (False, True):
            s = dataclasses.replace(setting, mode=mode, trap=trap)
            views = observe_round(run.final_state, clients, run.plan.train, s, aux_scaled=_public_rows(run), dp=dp,
                                  scaler=(run.scaler_mean, run.scaler_scale), secagg=_secagg(run))
            per = score_views(views, texts=texts, chain=chain, scaler_mode=scaler_mode, identifiers=ids)
            reports.append(_report(per, s, observed, scaler_mode, run, chain, seed))
    return reports


def _battery_setting(run, pid: int, seed: int) -> tuple[RoundSetting, tuple | None, str]:
    """The run's own round: its optimizer, batch, last-round learning rate, defence; and what the server sees."""
    plan, dp, defence = run.plan, None, "none"
    if plan.privacy.sample_level:
        cp = plan.privacy.clients[pid]
        dp = (PrivacyConfig(dp="sample", clip=plan.privacy.clip, noise=cp.noise_multiplier, delta=cp.delta,
                            clipping=plan.privacy.clipping or "fused"), cp)
        defence = "dp_sample"
    elif plan.privacy.client_level and plan.privacy.client_side_clipping:
        defence = "dp_client"  # server-side clipping: the server receives the unclipped update
    observed = "single client update"
    secure = {"secagg+": "secagg_plus", "ckks": "ckks"}.get(plan.secure.method)  # fedicd's method names
    if secure is not None:
        defence, observed = secure, f"average of {len(run.clients)} clients"
    setting = RoundSetting(optimizer=plan.federated.local_optimizer, lr=_round_lr(run), batch_size=plan.train.batch_size,
                           defence=defence, clip=plan.privacy.clip or 1.0, seed=seed)
    return setting, dp, observed


def _public_rows(run) -> np.ndarray:
    """The malicious server's public stand-in for calibrating trap biases: notes of patients outside the
    federation (the run's validation and test notes, scaled)."""
    return np.concatenate([run.features["x_val"], run.features["x_test"]])


def _secagg(run) -> dict:
    sec = run.plan.secure
    return {"clipping_range": float(sec.clipping_range), "quantization_range": int(sec.quantization_range)}


def run_material(run, pid: int) -> dict:
    """The run's note texts (training rows in ``x_train`` order), planted identifiers (synthetic corpus) and the
    adversary's public stand-in: notes of other patients (other clients' rows, validation and test) with the
    names their headers carry (``aux_names``: first, last; synthetic corpus only)."""
    from fedicd.config import config_from_dict
    from fedicd.prepare import prepare_data

    cfg = config_from_dict(run.plan.config)
    data = prepare_data(cfg)
    texts = {p: [data.notes.texts[i] for i in idx] for p, idx in data.parts.items()}
    ids = aux_names = None
    others = np.setdiff1d(np.arange(len(texts["train"])), run.clients[pid])
    if cfg.data.source == "synthetic":
        from fedicd.data.sources import synthetic_corpus

        by_id = {p.note_id: p for p in synthetic_corpus(cfg.data, cfg.seed).identifiers}
        planted = {p: [by_id[data.notes.ids[i]] for i in idx] for p, idx in data.parts.items()}
        ids = planted["train"]
        aux_ids = [ids[i] for i in others] + planted["val"] + planted["test"]
        aux_names = ([p.first_name for p in aux_ids], [p.last_name for p in aux_ids])
    aux_texts = [texts["train"][i] for i in others] + texts["val"] + texts["test"]
    aux_raw = run.unscale(np.concatenate([run.features["x_train"][others], run.features["x_val"],
                                          run.features["x_test"]]))
    return {"train_texts": texts["train"], "identifiers": ids, "aux_texts": aux_texts, "aux_raw": aux_raw,
            "aux_names": aux_names}


def _per_client(material: dict, key: str, run, order: list[int]) -> list[list] | None:
    """``material[key]`` (one entry per training row) split by the rows of the clients in ``order``."""
    if material[key] is None:
        return None
    return [[material[key][i] for i in run.clients[c]] for c in order]


def build_chain(material: dict, *, quick: bool = False, seed: int = 0, bow=None) -> dict:
    """The text side of the chain, trained once on the public stand-in: the bag-of-words inverter (``bow``: an
    :class:`attacks.bow.BowConfig`; default 1,000 words, 512 wide, 15 epochs) and, where the notes carry planted
    names, a :class:`attacks.update_inversion.NameGuesser`."""
    from attacks.bow import BowConfig, BowInverter
    from attacks.update_inversion import NameGuesser

    cfg = bow or (BowConfig(max_words=300, hidden=128, epochs=5, seed=seed) if quick else
                  BowConfig(max_words=1000, hidden=512, epochs=15, seed=seed))
    inverter = BowInverter(cfg).fit(material["aux_raw"], list(material["aux_texts"]))
    names = None if material["aux_names"] is None else NameGuesser(material["aux_raw"], *material["aux_names"])
    return {"inverter": inverter, "aux_texts": material["aux_texts"], "aux_raw": material["aux_raw"], "names": names}


def _report(per: dict, s: RoundSetting, observed: str, scaler_mode: str, run, chain, seed: int):
    from attacks.report import AttackReport
    from attacks.scoring import summarize

    settings = {"observed": observed, "server": "malicious (trap weights)" if s.trap else "curious (passive)",
                "mode": "one local step" if s.mode == "step" else "one local epoch", "optimizer": s.optimizer,
                "lr": s.lr, "batch_size": s.batch_size, "defence": s.defence, "dp": run.dp,
                "secure": run.plan.secure.method, "scaler": scaler_mode, "model": "final global model",
                "head": run.plan.train.head, "norm": run.plan.train.norm or "head default", "scored": "attacked client",
                "recipe": "public (optimizer, lr, weight decay)", "chained": chain is not None,
                "aux_texts": 0 if chain is None else len(chain["aux_texts"])}
    if run.plan.privacy.client_level and not run.plan.privacy.client_side_clipping:
        settings["note"] = "client-level DP clips on the server: the server receives the unclipped update"
    if s.defence == "ckks":
        settings["who"] = "a key holder (a client or the evaluator); the CKKS server alone holds only ciphertexts"
    return AttackReport("update_inversion", summarize(per, seed=seed), settings=settings)


def _round_lr(run) -> float:
    """The local learning rate of the run's last round (the public cosine schedule)."""
    fed = run.plan.federated
    return round_lr(float(fed.local_lr) or run.plan.train.lr, (fed.rounds - 1) * fed.local_epochs,
                    fed.rounds * fed.local_epochs)
