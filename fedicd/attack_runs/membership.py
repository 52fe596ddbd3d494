"""Membership inference against a finished federated run: reference heads trained with fedicd's recipe.

Two targets (:func:`battery_membership`):

* ``global``: the final global model. Members: every client's training notes;
  non-members: the run's validation and test notes (never trained on).
* ``client``: the weights client ``client`` (default 0) returns after one more
  local round from the final model, under the run's local recipe and DP plan
  (what a curious server receives). Members: that client's notes; non-members:
  as many held-out (validation/test) notes, drawn with the seed.

Reference heads (the adversary knows the recipe, :data:`attacks.threat.THREAT_MODELS`
``membership_inference``): the candidates of a target are its population. Reference
``j`` trains on the candidates ``keep[j]`` (:func:`attacks.membership.reference_keep`:
each candidate is in exactly half of the references, so each reference holds about
half the candidates, members and non-members alike):

* for ``global``: a simulated federation of ``keep[j]`` split IID into the run's
  number of clients, from a fresh initialisation, for the run's rounds and local
  epochs (:func:`fedicd.local_training.local_train`, or
  :func:`fedicd.privacy.dp_local.dp_local_train` with the target's σ, q and C under
  sample-level DP), FedAvg-averaged (under client-level DP: each update clipped to C,
  averaged, Gaussian noise σ·C/m added, as Flower's fixed-clipping wrapper does);
* for ``client``: one local round on ``keep[j]`` from the final global model (the
  server holds it), at the last round's learning rate.

FedProx's proximal term is kept; other server optimisers (FedAdam, …) are
approximated by FedAvg. Under secure aggregation the server never sees one client's
weights, so the ``client`` target is skipped (logged).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from attacks.membership import (ATTACKS, MembershipView, log_label_probability, membership_metrics,
                                membership_scores, reference_keep, tune_offline_a)
from attacks.membership.roc import FPR_LEVELS, roc_curve
from attacks.membership.view import FIXED_VARIANCE_BELOW
from attacks.report import AttackReport
from fedicd.errors import ConfigError

__all__ = ["MembershipOptions", "battery_membership", "train_reference_heads", "defence_of"]

log = logging.getLogger(__name__)

SIGNAL = "log p(y|x) - log(1 - p(y|x)), p(y|x) = prod_c sigmoid((2y_c - 1) z_c) (LiRA); p(y|x) itself (RMIA)"


class MembershipConfigError(ConfigError):
    """A membership battery option outside what the attack can do."""


@dataclass(frozen=True)
class MembershipOptions:
    """The battery's knobs (``quick`` shrinks ``n_refs`` to 4 and ``n_boot`` to 100)."""

    n_refs: int = 16
    n_boot: int = 1000
    targets: tuple[str, ...] = ("global", "client")
    client: int = 0
    fix_variance: bool | None = None
    out: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n_refs, int) or self.n_refs < 2 or self.n_refs % 2:
            raise MembershipConfigError(f"n_refs must be an even integer >= 2 (online LiRA/RMIA need IN and OUT "
                                        f"halves), got {self.n_refs!r}")
        if self.n_boot < 1:
            raise MembershipConfigError(f"n_boot must be >= 1, got {self.n_boot}")
        bad = sorted(set(self.targets) - {"global", "client"})
        if bad or not self.targets:
            raise MembershipConfigError(f"targets must be a non-empty subset of ('global', 'client'), got "
                                        f"{self.targets!r}")


def defence_of(run) -> dict:
    """The run's defences as its plan records them."""
    p = run.plan.privacy
    out = {"dp": p.dp, "secure_aggregation": run.plan.secure.method}
    if p.sample_level:
        c = p.clients[0]
        out.update(target_epsilon=p.target_epsilon, delta=p.delta, clip=p.clip, noise_multiplier=c.noise_multiplier,
                   sample_rate=c.sample_rate)
    elif p.client_level:
        out.update(target_epsilon=p.target_epsilon, clip=p.clip, noise_multiplier=p.noise_multiplier,
                   sampled_clients=p.sampled_clients)
    return out


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one intra-op thread, the previous count restored on exit. Reference heads are tiny: extra threads
    only add synchronisation (the quick battery on a 2-core machine took 25 s with torch's default 2 threads and
    1.3 s with one; identical scores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _numpy_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def _local_round(run, state: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, server_round: int,
                 partition_id: int, seed: int, dp_plan=None) -> dict[str, np.ndarray]:
    """One client's local round from ``state`` on ``(x, y)`` under the run's recipe (and DP-SGD plan)."""
    from fedicd.local_training import LocalTrainConfig, local_train

    fed = run.plan.federated
    local = LocalTrainConfig(server_round=server_round, total_rounds=fed.rounds, local_epochs=fed.local_epochs,
                             partition_id=partition_id, seed=seed,
                             proximal_mu=fed.proximal_mu if fed.strategy == "fedprox" else 0.0,
                             optimizer=fed.local_optimizer, lr=float(fed.local_lr),
                             momentum=float(fed.local_momentum))
    model = run.build_head(state)
    if run.plan.privacy.sample_level:
        _dp_local_epochs(model, x, y, run, local, dp_plan or dataclasses.replace(run.plan.privacy.clients[0], n=len(x)))
    else:
        local_train(model, SimpleNamespace(x_train=x, y_train=y), run.plan.train, local)
    return _numpy_state(model)


def _dp_local_epochs(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, run, local, plan) -> None:
    """The run's DP-SGD local round (:func:`fedicd.privacy.dp_local.dp_local_train`'s loop, seeding and FedProx
    hook: Poisson batches at ``plan.sample_rate``, per-sample clipping to C, noise ``plan.noise_multiplier`` · C)
    without its accounting (an adversary's reference heads need no ε)."""
    from fedicd.local_training import local_optimizer, proximal_gradient_, round_seed, run_local_epochs
    from fedicd.privacy.dp_sgd import DPStepper, poisson_batches

    train, privacy = run.plan.train, run.plan.privacy
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    peak_lr = local.lr or train.lr
    opt = local_optimizer(model, local.optimizer, peak_lr, train.weight_decay, momentum=local.momentum)
    hook = None
    if local.proximal_mu > 0:
        anchor = [p.detach().clone() for p in model.parameters()]

        def hook() -> None:
            proximal_gradient_(model, anchor, local.proximal_mu)

    seed = round_seed(local)
    sampler, noise = torch.Generator().manual_seed(seed + 11), torch.Generator().manual_seed(seed + 12)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stepper = DPStepper(model, opt, train.loss(), plan, clip=privacy.clip, clipping=privacy.clipping or "fused",
                            noise_generator=noise)
        try:
            run_local_epochs(model, opt, peak_lr, local, lambda xb, yb: stepper.step(xb, yb, hook),
                             lambda: poisson_batches(xt, yt, plan.sample_rate, plan.steps_per_epoch, sampler))
        finally:
            stepper.close()


def _clipped(update: dict[str, np.ndarray], clip: float) -> dict[str, np.ndarray]:
    """``update`` scaled to global L2 norm at most ``clip`` (Flower's ``compute_clip_model_update``)."""
    norm = np.sqrt(sum(float((u.astype(np.float64) ** 2).sum()) for u in update.values()))
    factor = min(1.0, clip / norm) if norm > 0 else 1.0
    return {k: u * factor for k, u in update.items()}


def _aggregate(run, state: dict[str, np.ndarray], replies: list[dict[str, np.ndarray]], sizes: list[int],
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    """FedAvg (weighted by notes); under client-level DP: clip each update to C, plain mean, add N(0, (σC/m)²)."""
    floats = [k for k, v in state.items() if v.dtype.kind == "f"]
    updates = [{k: r[k] - state[k] for k in floats} for r in replies]
    p = run.plan.privacy
    if p.client_level:
        updates = [_clipped(u, p.clip) for u in updates]
        weights = np.full(len(updates), 1.0 / len(updates))
    else:
        weights = np.asarray(sizes, dtype=np.float64) / sum(sizes)
    new = dict(state)
    for k in floats:
        mean = sum(w * u[k] for w, u in zip(weights, updates))
        if p.client_level:
            mean = mean + rng.normal(0.0, p.noise_multiplier * p.clip / len(updates), size=mean.shape)
        new[k] = (state[k] + mean).astype(state[k].dtype)
    return new


def _simulate_federation(run, x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The run's federation re-played on ``(x, y)`` split IID over its clients, from a fresh head."""
    rng = np.random.default_rng(seed)
    n_clients = run.plan.n_clients
    shards = [s for s in np.array_split(rng.permutation(len(x)), n_clients) if len(s) > 1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = _numpy_state(run.plan.train.build(run.plan.input_dim, run.plan.n_labels))
    per_round = run.plan.privacy.sampled_clients if run.plan.privacy.client_level else 0
    for rnd in range(1, run.plan.federated.rounds + 1):
        chosen = (sorted(rng.choice(len(shards), per_round, replace=False)) if 0 < per_round < len(shards)
                  else range(len(shards)))
        replies = [_local_round(run, state, x[shards[i]], y[shards[i]], server_round=rnd, partition_id=i, seed=seed)
                   for i in chosen]
        state = _aggregate(run, state, replies, [len(shards[i]) for i in chosen], rng)
    return state


@torch.inference_mode()
def _logits(run, state: dict[str, np.ndarray] | None, x: np.ndarray) -> np.ndarray:
    model = run.build_head(state)
    model.eval()
    return model(torch.as_tensor(x, dtype=torch.float32)).double().numpy()


def train_reference_heads(run, x: np.ndarray, y: np.ndarray, keep: np.ndarray, *, seed: int,
                          start: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Logits ``[R, n, C]`` on ``x`` of reference heads, head ``j`` trained on ``x[keep[j]]``: a re-played
    federation from scratch (``start=None``) or one local round from ``start``."""
    out = []
    for j, rows in enumerate(keep):
        s = seed * 7_919 + j
        if start is None:
            state = _simulate_federation(run, x[rows], y[rows], s)
        else:
            state = _local_round(run, start, x[rows], y[rows], server_round=run.plan.federated.rounds,
                                 partition_id=j, seed=s)
        out.append(_logits(run, state, x))
    return np.stack(out)


def _candidates(run, target: str, client: int, rng: np.random.Generator):
    """``(x, y, is_member, description)`` of a target's candidate notes (members first)."""
    f = run.features
    held_x, held_y = np.concatenate([f["x_val"], f["x_test"]]), np.concatenate([f["y_val"], f["y_test"]])
    if target == "global":
        rows = np.concatenate(run.clients)
        mx, my = f["x_train"][rows], f["y_train"][rows]
        what = (f"all {len(rows)} training notes of the {len(run.clients)} clients (members) and the "
                f"{len(held_x)} validation + test notes (non-members)")
    else:
        mx, my = run.client_rows(client)
        pick = rng.choice(len(held_x), size=min(len(mx), len(held_x)), replace=False)
        held_x, held_y = held_x[pick], held_y[pick]
        what = (f"client {client}'s {len(mx)} training notes (members) and {len(held_x)} validation/test notes "
                "drawn at random (non-members)")
    x, y = np.concatenate([mx, held_x]), np.concatenate([my, held_y])
    return x, y, np.r_[np.ones(len(mx), bool), np.zeros(len(held_x), bool)], what


def _client_update(run, client: int, seed: int) -> dict[str, np.ndarray]:
    """The weights client ``client`` returns after one local round from the final model (its own DP plan)."""
    x, y = run.client_rows(client)
    plan = run.plan.privacy.clients[client] if run.plan.privacy.sample_level else None
    state = _local_round(run, run.final_state, x, y, server_round=run.plan.federated.rounds, partition_id=client,
                         seed=run.plan.seed + 1_000_003 * (seed + 1), dp_plan=plan)
    p = run.plan.privacy
    if p.client_level and p.client_side_clipping:  # the client clips its own update before sending it
        update = _clipped({k: v - run.final_state[k] for k, v in state.items() if v.dtype.kind == "f"}, p.clip)
        state = {**state, **{k: (run.final_state[k] + u).astype(u.dtype) for k, u in update.items()}}
    return state


def _target(run, target: str, opts: MembershipOptions, seed: int):
    """``(view, is_member, description)`` for one target (refs trained here)."""
    rng = np.random.default_rng(seed)
    x, y, member, what = _candidates(run, target, opts.client, rng)
    keep = reference_keep(opts.n_refs, len(x), seed=seed, online=True)
    if target == "global":
        target_logits = _logits(run, None, x)
        refs = train_reference_heads(run, x, y, keep, seed=seed)
        observed = f"final global model (FedAvg of {run.plan.n_clients} clients)"
        trained = "a re-played federation (IID over the run's clients) on the candidates keep[j], from scratch"
    else:
        target_logits = _logits(run, _client_update(run, opts.client, seed), x)
        refs = train_reference_heads(run, x, y, keep, seed=seed, start=run.final_state)
        observed = f"single client update (client {opts.client}'s weights after one local round)"
        trained = "one local round from the final global model on the candidates keep[j]"
    settings = {"target": target, "observed": observed, "candidates": what, "reference_training": trained,
                "n_refs": opts.n_refs, "population": "the candidates (each in exactly half of the references)",
                "scaler": "not needed (the head's inputs are the staged scaled embeddings)", "signal": SIGNAL}
    view = MembershipView(target_logits, y, refs, keep, settings=settings)
    return view, member


def _low_fpr_note(n_out: int) -> str:
    """Which TPR-at-FPR levels ``n_out`` non-members cannot resolve (below ``1 / n_out`` a level allows no false
    positive at all), or ``""``."""
    blind = [f"{100 * f:g} %" for f in FPR_LEVELS if f * n_out < 1]
    if not blind:
        return ""
    return (f"{n_out} non-members: the smallest non-zero FPR is {1 / n_out:.4f}, so TPR at {' and '.join(blind)} "
            "FPR means TPR with no false positive at all (not a measurement at that FPR)")


def _reports(run, view: MembershipView, member: np.ndarray, opts: MembershipOptions, seed: int
             ) -> tuple[list[AttackReport], dict]:
    fix_variance = opts.fix_variance
    if fix_variance is None:
        fix_variance = int(view.ref_keep.sum(axis=0).min()) < FIXED_VARIANCE_BELOW
    a = tune_offline_a(log_label_probability(view.ref_logits, view.labels), view.ref_keep)
    scores = membership_scores(view, fix_variance=fix_variance, offline_a=a)
    rng = np.random.default_rng(seed + 17)
    baselines = {"loss": membership_metrics(scores["loss"], member, n_boot=opts.n_boot, seed=seed),
                 "random": membership_metrics(rng.random(len(member)), member, n_boot=opts.n_boot, seed=seed)}
    flat = {f"{b}_{k}": v for b, block in baselines.items() for k, v in block.items()}
    n_out = int((~member).sum())
    settings = {**view.settings, "n_members": int(member.sum()), "n_nonmembers": n_out,
                "defence": defence_of(run), "fix_variance": fix_variance, "rmia_offline_a": a,
                "low_fpr_note": _low_fpr_note(n_out)}
    reports = [AttackReport("membership_inference", membership_metrics(scores[a], member, n_boot=opts.n_boot,
                                                                        seed=seed),
                            settings={**settings, "attack": a}, baselines=flat) for a in ATTACKS]
    curves = {name: roc_curve(s, member)[:2] for name, s in scores.items()}
    curves["random"] = roc_curve(rng.random(len(member)), member)[:2]
    return reports, curves


def battery_membership(run, *, seed: int = 0, quick: bool = False, n_refs: int = 16, **options) -> list[AttackReport]:
    """LiRA (online, offline) and RMIA (online, offline) against the final global model and one client's update.

    Parameters
    ----------
    run : fedicd.attack_runs.federation.FederationRun
        A finished federated run.
    seed : int
        Seeds the reference splits, the reference heads, the held-out draw and the bootstrap.
    quick : bool
        4 reference heads and 100 bootstrap resamples (seconds; for tests and CI).
    n_refs : int
        Reference heads per target (even, >= 2).
    **options
        ``targets``, ``client``, ``n_boot``, ``fix_variance`` (:class:`MembershipOptions`) and ``out``: a folder
        for the log-scale ROC PNGs (``membership_roc_<target>.png``).

    Returns
    -------
    list of AttackReport
        One ``membership_inference`` report per attack and target, with the loss-threshold and random baselines.
    """
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(MembershipOptions)})
    if unknown:
        raise MembershipConfigError(f"unknown membership option(s) {unknown}; known: "
                                    f"{[f.name for f in dataclasses.fields(MembershipOptions)]}")
    if quick:
        n_refs, options = min(n_refs, 4), {"n_boot": 100, **options}
    opts = MembershipOptions(n_refs=n_refs, **options)
    if not 0 <= opts.client < len(run.clients):
        raise MembershipConfigError(f"client must be in [0, {len(run.clients)}), got {opts.client}")
    targets = list(opts.targets)
    if "client" in targets and run.plan.secure.enabled:
        log.info("membership: secure aggregation (%s) hides single client updates; the client target is skipped",
                 run.plan.secure.method)
        targets.remove("client")
        if not targets:
            raise MembershipConfigError(f"secure aggregation ({run.plan.secure.method}) hides single client updates: "
                                        "the server holds only their sum, so the 'client' target cannot be "
                                        "attacked; use targets=('global',)")
    reports: list[AttackReport] = []
    for i, target in enumerate(targets):
        with _one_thread():
            view, member = _target(run, target, opts, seed + i)
        rep, curves = _reports(run, view, member, opts, seed + i)
        if opts.out is not None:
            from fedicd.plots import plot_log_roc

            path = Path(opts.out) / f"membership_roc_{target}.png"
            Path(opts.out).mkdir(parents=True, exist_ok=True)
            plot_log_roc(curves, path, title=f"membership inference: {target} target, dp={run.dp}, {opts.n_refs} refs")
            for r in rep:
                r.settings["roc_png"] = str(path)
        reports.extend(rep)
    return reports
