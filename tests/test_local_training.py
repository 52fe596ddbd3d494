"""The one training loop reproduces, bit for bit, straightforward loops written out here.

Each reference below spells out one path the way it is meant to run (same seeds, same batch order, same float
operations in the same order), so a later change of :func:`fedicd.train.run_epoch` or its hooks that alters a
single bit of central, federated or DP-SGD training fails here.
"""

import dataclasses
import math
import pickle
import subprocess
import sys

import pytest
import torch

from fedicd.errors import ConfigError
from fedicd.federated.config import FedConfig
from fedicd.local_training import (LocalTrainConfig, local_optimizer, local_train, proximal_term,
                                   round_lr, round_seed)
from fedicd.privacy.accounting import plan_dp
from fedicd.privacy.config import PrivacyConfig
from fedicd.privacy.dp_local import dp_local_train
from fedicd.privacy.dp_sgd import DPStepper
from fedicd.train import TrainConfig, train_central

from tests.training_rows import Rows, seeded_rows


def _batches(n, batch_size, gen):
    """A permutation in chunks of ``batch_size``; a last chunk of one row joins the one before."""
    order = torch.randperm(n, generator=gen)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [order[s:e] for s, e in zip(starts, [*starts[1:], n])]


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_central_equals_a_plain_adamw_cosine_loop():
    x, y = seeded_rows(n=81)
    cfg = TrainConfig(head="deep_mlp", epochs=3, batch_size=16, seed=4)
    got = train_central(x, y, cfg).model.state_dict()
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        model = cfg.build(12, 5)
        gen = torch.Generator().manual_seed(5)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
        loss_fn = cfg.loss()
        for _ in range(3):
            model.train()
            for idx in _batches(len(xt), 16, gen):
                opt.zero_grad()
                loss_fn(model(xt[idx]), yt[idx]).backward()
                opt.step()
            sched.step()
    assert _equal(got, model.state_dict())


def _reference_local(model, x, y, cfg, local, c=None, c_i=None):
    """A client's round written out: seeds, cosine lr, proximal term in the loss, SCAFFOLD on the gradients."""
    peak = local.lr or cfg.lr
    if local.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=peak, weight_decay=cfg.weight_decay, momentum=local.momentum)
    start = [p.detach().clone() for p in model.parameters()]
    loss_fn = cfg.loss()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(round_seed(local))
        gen = torch.Generator().manual_seed(round_seed(local) + 1)
        for e in range(local.local_epochs):
            epoch = (local.server_round - 1) * local.local_epochs + e
            lr = 0.5 * peak * (1.0 + math.cos(math.pi * epoch / (local.total_rounds * local.local_epochs)))
            for group in opt.param_groups:
                group["lr"] = lr
            model.train()
            for idx in _batches(len(x), cfg.batch_size, gen):
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                if local.proximal_mu > 0:
                    penalty = torch.zeros(())
                    for p, s in zip(model.parameters(), start):
                        penalty = penalty + (p - s).pow(2).sum()
                    loss = loss + 0.5 * local.proximal_mu * penalty
                loss.backward()
                if c is not None:
                    for name, p in model.named_parameters():
                        p.grad.add_(c[name] - c_i[name])
                opt.step()


@pytest.mark.parametrize("kind", ["adamw", "sgd", "sgd_momentum", "fedprox", "scaffold"])
def test_local_train_equals_a_written_out_client_round(kind):
    x, y = seeded_rows()
    cfg = TrainConfig(head="mlp", batch_size=16, seed=0)
    extra = {"sgd": dict(optimizer="sgd", lr=0.2), "sgd_momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9),
             "fedprox": dict(proximal_mu=0.7)}.get(kind, {})
    local = LocalTrainConfig(server_round=2, total_rounds=3, local_epochs=2, partition_id=1, seed=3, **extra)
    torch.manual_seed(0)
    model = cfg.build(12, 5)
    ref = cfg.build(12, 5)
    ref.load_state_dict(model.state_dict())
    controls = {}
    if kind == "scaffold":
        g = torch.Generator().manual_seed(1)
        controls = {key: {n: torch.randn(p.shape, generator=g) * 0.01 for n, p in model.named_parameters()}
                    for key in ("c", "c_i")}
    local_train(model, Rows(x, y), cfg, local, scaffold_c=controls.get("c"), scaffold_c_i=controls.get("c_i"))
    _reference_local(ref, torch.as_tensor(x), torch.as_tensor(y), cfg, local, controls.get("c"), controls.get("c_i"))
    assert _equal(model.state_dict(), ref.state_dict())


@pytest.mark.parametrize("clipping, momentum", [("fused", 0.0), ("hooks", 0.0), ("fused", 0.9)])
def test_dp_local_train_equals_dp_steps_on_written_out_poisson_batches(clipping, momentum):
    x, y = seeded_rows(n=70)
    cfg = TrainConfig(head="deep_mlp", norm="group", hidden=(16,), batch_size=16, seed=0)
    plan = plan_dp(n=70, batch_size=16, rounds=2, local_epochs=2, noise=0.8, target_epsilon=0.0, delta=1e-5)
    privacy = PrivacyConfig(dp="sample", noise=0.8, clip=0.5, clipping=clipping)
    local = LocalTrainConfig(server_round=2, total_rounds=2, local_epochs=2, partition_id=0, seed=1,
                             proximal_mu=0.3, optimizer="sgd", lr=0.1, momentum=momentum)
    torch.manual_seed(0)
    model = cfg.build(12, 5)
    ref = cfg.build(12, 5)
    ref.load_state_dict(model.state_dict())
    dp_local_train(model, x, y, cfg, local, privacy, plan, [])
    xt, yt, seed = torch.as_tensor(x), torch.as_tensor(y), round_seed(local)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, weight_decay=cfg.weight_decay, momentum=momentum)
    start = [p.detach().clone() for p in ref.parameters()]
    sampler, noise = torch.Generator().manual_seed(seed + 11), torch.Generator().manual_seed(seed + 12)

    def prox():
        for p, s in zip(ref.parameters(), start):
            p.grad.add_(p.detach() - s, alpha=0.3)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stepper = DPStepper(ref, opt, cfg.loss(), plan, clip=0.5, clipping=clipping, noise_generator=noise)
        ref.train()
        for e in range(2):
            for group in opt.param_groups:
                group["lr"] = round_lr(0.1, 2 + e, 4)
            for _ in range(plan.steps_per_epoch):
                idx = (torch.rand(70, generator=sampler) < plan.sample_rate).nonzero().squeeze(1)
                stepper.step(xt[idx], yt[idx], prox)
        stepper.close()
    assert _equal(model.state_dict(), ref.state_dict())


def test_the_strategies_use_the_local_training_hooks_and_mu_is_checked():
    """One definition each: FedProx's and SCAFFOLD's modules hand out the local trainer's functions."""
    from fedicd import local_training
    from fedicd.strategies.fedprox import proximal_term as fedprox_term
    from fedicd.strategies.scaffold import scaffold_correct_gradients_ as scaffold_correction

    assert fedprox_term is local_training.proximal_term
    assert scaffold_correction is local_training.scaffold_correct_gradients_
    model = TrainConfig(head="mlp").build(6, 3)
    start = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="mu must be a finite number >= 0, got -1"):
        proximal_term(model, start, -1.0)


def test_local_training_and_dp_import_neither_flower_nor_the_federated_engine():
    """Configuration sections (``*.config``) may come along; Flower, the round loop and the strategies may not."""
    code = ("import sys, fedicd.local_training, fedicd.privacy.dp_local; "
            "print(sorted(m for m in sys.modules if m.startswith(('flwr', 'fedicd.federated.', 'fedicd.strategies.'))"
            " and not m.endswith(('.config', '.keys', '._params'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_local_optimizer_takes_momentum_only_as_an_explicit_keyword():
    model = TrainConfig(head="linear").build(6, 3)
    local = LocalTrainConfig(1, 1, 1, 0, 0, optimizer="sgd", momentum=0.9)
    assert type(local.optimizer) is str and local.optimizer == "sgd"
    assert local_optimizer(model, local.optimizer, 0.1, 0.0, momentum=local.momentum).param_groups[0]["momentum"] == 0.9
    assert local_optimizer(model, local.optimizer, 0.1, 0.0).param_groups[0]["momentum"] == 0.0
    back = pickle.loads(pickle.dumps(local))
    assert back == local and back.momentum == 0.9
    assert dataclasses.replace(local, momentum=0.5).momentum == 0.5
    assert type(local_optimizer(model, LocalTrainConfig(1, 1, 1, 0, 0).optimizer, 0.1, 0.0)) is torch.optim.AdamW


def test_every_local_optimizer_caller_passes_the_local_momentum():
    """Momentum is explicit: each caller that holds a LocalTrainConfig hands ``local.momentum`` on."""
    import inspect

    import fedicd.attack_runs.audit as audit
    import fedicd.attack_runs.membership as membership
    import fedicd.attack_runs.update_inversion as update_inversion
    import fedicd.local_training as local_training
    import fedicd.privacy.dp_local as dp_local

    for module in (local_training, dp_local, audit, membership, update_inversion):
        calls = [line for line in inspect.getsource(module).splitlines() if "= local_optimizer(model" in line]
        assert calls and all("momentum=local.momentum" in line for line in calls), (module.__name__, calls)


def test_momentum_errors_name_the_setting():
    model = TrainConfig(head="linear").build(6, 3)
    with pytest.raises(ValueError, match=r"local momentum 0.9 needs local optimizer 'sgd', got 'adamw'.*"
                                         r"set federated.local_momentum = 0"):
        LocalTrainConfig(1, 1, 1, 0, 0, optimizer="adamw", momentum=0.9)
    with pytest.raises(ValueError, match=r"local momentum must be in \[0, 1\), got 1.0 \(set federated.local_momentum\)"):
        local_optimizer(model, "sgd", 0.1, 0.0, momentum=1.0)
    with pytest.raises(ConfigError, match=r"federated.local_momentum must be in \[0, 1\), got -0.1"):
        FedConfig(local_optimizer="sgd", local_momentum=-0.1)
    with pytest.raises(ConfigError, match="federated.local_momentum = 0.5 needs federated.local_optimizer = 'sgd'"):
        FedConfig(local_optimizer="adamw", local_momentum=0.5)
    assert FedConfig(local_optimizer="sgd", local_momentum=0.9).local_momentum == 0.9
