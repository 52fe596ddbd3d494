"""DP-SGD on chunk-sequence heads: fused, Opacus ghost and Opacus hooks (Opacus' own Linear / Conv1d / LayerNorm
samplers) give the same noised step; ``privacy.clipping = "auto"``; dp_local_train on ChunkSequences."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from fedicd.errors import ConfigError
from fedicd.federated.config import FedConfig
from fedicd.local_training import LocalTrainConfig
from fedicd.losses import HybridLoss
from fedicd.privacy.accounting import DPPlan, plan_dp
from fedicd.privacy.config import PrivacyConfig
from fedicd.privacy.dp_local import dp_local_train
from fedicd.privacy.dp_sgd import DPStepper, poisson_batches
from fedicd.privacy.plan import plan_privacy, planned_clipping
from fedicd.sequences import ChunkSequences
from fedicd.train_config import TrainConfig

heads = pytest.importorskip("fedicd.heads")
if "label_attention" not in getattr(heads, "HEADS", {}):
    pytest.skip("the chunk-sequence heads are not registered in fedicd.heads yet", allow_module_level=True)

CASES = [("label_attention", {"hidden": (5, 4)}), ("multires_cnn", {"hidden": (3,), "kernel_sizes": (1, 3)}),
         ("multires_cnn", {"hidden": (2,), "kernel_sizes": (3,), "norm": "layer"})]


def _sequences(n=12, dim=6, labels=5, max_len=4, seed=0):
    rng = np.random.default_rng(seed)
    seqs = ChunkSequences.from_lists([rng.standard_normal((int(k), dim)) for k in rng.integers(1, max_len + 1, n)])
    return seqs, (rng.random((n, labels)) < 0.3).astype(np.float32)


def _plan(n, sigma):
    return DPPlan(n=n, sample_rate=0.5, steps_per_epoch=2, total_steps=2, noise_multiplier=sigma, delta=1e-5,
                  target_epsilon=0.0)


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_fused_ghost_and_hooks_take_the_same_noised_step(name, kwargs):
    torch.manual_seed(0)
    base = heads.build_head(name, 6, 5, dropout=0.0, **kwargs)
    trainable = {type(m) for m in base.modules() if any(True for _ in m.parameters(recurse=False))}
    assert trainable <= set(GradSampleModule.GRAD_SAMPLERS)  # Opacus' own samplers, no functorch fallback
    seqs, y = _sequences()
    x, y = seqs[np.arange(len(seqs))], torch.from_numpy(y)
    updated, norms_bind = {}, None
    for mode in ("fused", "ghost", "hooks"):
        model = copy.deepcopy(base)
        stepper = DPStepper(model, torch.optim.SGD(model.parameters(), lr=1.0), HybridLoss(), _plan(24, 0.7),
                            clip=0.02, clipping=mode, noise_generator=torch.Generator().manual_seed(9))
        assert stepper.clipping == mode
        stepper.step(x, y)
        stepper.close()
        norms_bind = stepper.stats.clipped_fraction_sum if mode == "fused" else norms_bind
        updated[mode] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert norms_bind == 1.0  # the clip binds on every note: the clipping factors matter
    for mode in ("ghost", "hooks"):
        for k in updated["fused"]:
            torch.testing.assert_close(updated[mode][k], updated["fused"][k], rtol=1e-4, atol=1e-6)
    moved = [k for k in updated["fused"] if not torch.equal(updated["fused"][k], base.state_dict()[k])]
    assert moved == list(base.state_dict())


def test_auto_resolves_to_fused_for_supported_heads_and_ghost_otherwise(monkeypatch):
    train = TrainConfig(head="label_attention", hidden=(5, 4))
    assert PrivacyConfig().clipping == "auto"
    assert planned_clipping("auto", train, 6, 5) == ("fused", None)
    assert planned_clipping("hooks", train, 6, 5) == ("hooks", None)
    fed = FedConfig()
    _, plan = plan_privacy(PrivacyConfig(dp="sample", noise=1.0), fed, train, [40, 40], 6, 5)
    assert plan.clipping == "fused" and plan.head_notices == ()
    _, plan = plan_privacy(PrivacyConfig(dp="sample", noise=1.0, clipping="fused"), fed, train, [40, 40], 6, 5)
    assert plan.clipping == "fused"

    monkeypatch.setattr(TrainConfig, "build", lambda self, d, n: nn.Sequential(nn.Embedding(d, 3), nn.Linear(3, n)))
    _, plan = plan_privacy(PrivacyConfig(dp="sample", noise=1.0), fed, train, [40, 40], 6, 5)
    assert plan.clipping == "ghost" and len(plan.head_notices) == 1
    assert "'auto' → 'ghost'" in plan.head_notices[0] and "'0' (Embedding" in plan.head_notices[0]
    with pytest.raises(ConfigError, match=r"head 'label_attention': privacy.clipping = 'fused' cannot clip layers "
                                          r"\[\"'0' \(Embedding"):
        plan_privacy(PrivacyConfig(dp="sample", noise=1.0, clipping="fused"), fed, train, [40, 40], 6, 5)
    with pytest.raises(ConfigError, match="privacy.clipping must be one of"):
        PrivacyConfig(clipping="fast")


def test_poisson_batches_of_chunk_sequences_are_padded_per_batch():
    seqs, y = _sequences(n=30, max_len=6)
    seen = 0
    for xb, yb in poisson_batches(seqs, torch.from_numpy(y), 0.3, 5, torch.Generator().manual_seed(2)):
        assert xb.dim() == 3 and xb.shape[2] == 7 and len(xb) == len(yb)
        if len(xb):
            assert xb[..., 0].sum(1).max() == xb.shape[1]  # padded to the batch's own longest note
            seen += len(xb)
    assert seen > 0


def _round(seqs, y, clipping, seed=0):
    cfg = TrainConfig(head="label_attention", hidden=(5, 4), dropout=0.0, batch_size=6, seed=seed)
    torch.manual_seed(seed)
    model = cfg.build(seqs.dim, y.shape[1])
    start = copy.deepcopy(model.state_dict())
    plan = plan_dp(n=len(seqs), batch_size=6, rounds=1, local_epochs=1, noise=0.9, target_epsilon=0.0, delta=1e-5)
    res = dp_local_train(model, seqs, y, cfg, LocalTrainConfig(1, 1, 1, 0, seed), PrivacyConfig(dp="sample", noise=0.9),
                         plan, [], clipping=clipping)
    return model, start, res, plan


def test_one_dp_sgd_round_of_a_sequence_head_on_chunk_sequences():
    seqs, y = _sequences(n=24)
    model, start, res, plan = _round(seqs, y, None)  # privacy.clipping = "auto" → fused
    assert res.steps == plan.steps_per_epoch == 4 and res.history == [(0.9, plan.sample_rate, 4)]
    assert np.isfinite(res.loss) and 0 < res.epsilon < np.inf
    assert all(not torch.equal(v, start[k]) for k, v in model.state_dict().items())
    again, _, res2, _ = _round(seqs, y, "hooks")  # same seeds, Opacus' per-sample gradients: the same round
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, rtol=1e-4, atol=1e-6)
    assert res2.loss == pytest.approx(res.loss, rel=1e-5)
    with pytest.raises(ValueError, match="the DP plan is for 24 notes but the client holds 12"):
        dp_local_train(model, seqs.take(np.arange(12)), y[:12], TrainConfig(), LocalTrainConfig(1, 1, 1, 0, 0),
                       PrivacyConfig(dp="sample", noise=0.9), dataclasses.replace(plan), [])
