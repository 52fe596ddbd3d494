"""build_model copies a cached template: the same module, and the same local training, as a fresh build."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from fedicd.federated.records import to_record
from fedicd.heads import HEADS, SEQUENCE_HEADS
from fedicd.local_training import LocalTrainConfig, build_model, local_train
from fedicd.sequences import ChunkSequences
from fedicd.train_config import TrainConfig

from tests.training_rows import Rows, seeded_rows

SMALL = {"mlp": {"hidden": (6,)}, "deep_mlp": {"hidden": (6, 5)}, "deep_res_mlp": {"hidden": (6,)}, "linear": {},
         "bottleneck": {"hidden": (3,)}, "label_attention": {"hidden": (7, 6)},
         "multires_cnn": {"hidden": (4,), "kernel_sizes": (1, 3)}}
CONFIGS = [TrainConfig(head=name, seed=3, **SMALL[name]) for name in HEADS] + [
    TrainConfig(head="mlp", hidden=(6,), norm="layer", input_norm="l2", seed=3),
    TrainConfig(head="deep_mlp", hidden=(6, 5), norm="batch", seed=3)]


def _old_build(cfg: TrainConfig, d: int, n: int, record: ArrayRecord) -> torch.nn.Module:
    """build_model as it was: a fresh (randomly initialised) build, then Flower's decoding."""
    with torch.random.fork_rng(devices=[]):
        model = cfg.build(d, n)
    model.load_state_dict(record.to_torch_state_dict())
    return model


def _global(cfg: TrainConfig, d: int, n: int, seed: int) -> ArrayRecord:
    torch.manual_seed(seed)
    model = cfg.build(d, n)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # weights no build would draw
    return to_record({k: v.numpy() for k, v in model.state_dict().items()})


def _inputs(cfg: TrainConfig, d: int, rows: int) -> torch.Tensor | ChunkSequences:
    rng = np.random.default_rng(1)
    if cfg.head in SEQUENCE_HEADS:
        notes = ChunkSequences.from_lists([rng.normal(size=(k % 3 + 1, d)) for k in range(rows)])
        return notes[list(range(rows))]  # a padded batch [B, T, 1 + d]
    return torch.as_tensor(rng.normal(size=(rows, d)), dtype=torch.float32)


def _plain_state(module: torch.nn.Module) -> list[dict]:
    """Every submodule's attributes other than its tensors and children (a head must keep no other state)."""
    skip = {"_parameters", "_buffers", "_modules"}
    return [{k: v for k, v in vars(m).items() if k not in skip and not k.endswith("hooks")} for m in module.modules()]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.head}-{c.norm}-{c.input_norm}")
def test_the_copied_template_is_the_module_a_fresh_build_gives(cfg):
    d, n = 5, 4
    record = _global(cfg, d, n, seed=0)
    rng_before = torch.get_rng_state()
    new, old = build_model(cfg, d, n, record), _old_build(cfg, d, n, record)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's global RNG is neither used nor moved
    assert new.state_dict().keys() == old.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))
    assert _plain_state(new) == _plain_state(old) and new.training and old.training
    x = _inputs(cfg, d, rows=6)
    for mode in ("eval", "train"):  # train: dropout drawn from the same seed
        outs = []
        for model in (new, old):
            getattr(model, mode)()
            torch.manual_seed(11)
            outs.append(model(x))
        assert torch.equal(outs[0], outs[1])


def test_each_call_gives_an_independent_module_holding_the_given_arrays():
    cfg = TrainConfig(head="mlp", hidden=(6,), seed=3)
    first = build_model(cfg, 5, 4, _global(cfg, 5, 4, seed=0))
    with torch.no_grad():
        for p in first.parameters():
            p.zero_()
    first.eval()
    second_arrays = _global(cfg, 5, 4, seed=1)
    second = build_model(cfg, 5, 4, second_arrays)
    assert second.training and not any(p.abs().sum() == 0 for p in second.parameters())
    expected = second_arrays.to_torch_state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in second.state_dict().items())
    plain = build_model(cfg, 5, 4, {k: v.numpy() for k, v in expected.items()})  # named arrays work too
    assert all(torch.equal(v, expected[k]) for k, v in plain.state_dict().items())
    with pytest.raises(RuntimeError, match="size mismatch"):
        build_model(cfg, 5, 4, {**{k: v.numpy() for k, v in expected.items()}, "net.0.bias": np.zeros(7, "f4")})


def test_a_local_round_on_the_copied_template_equals_one_on_a_fresh_build():
    x, y = seeded_rows(n=40)
    cfg = TrainConfig(head="deep_mlp", hidden=(8, 6), batch_size=8, seed=2)
    record = _global(cfg, x.shape[1], y.shape[1], seed=5)
    local = LocalTrainConfig(server_round=2, total_rounds=4, local_epochs=2, partition_id=1, seed=2, proximal_mu=0.1)

    states = []
    for make in (build_model, _old_build):
        model = make(cfg, x.shape[1], y.shape[1], record)
        loss = local_train(model, Rows(x, y), cfg, local)
        states.append((loss, model.state_dict()))
    assert states[0][0] == states[1][0]
    assert all(torch.equal(states[0][1][k], states[1][1][k]) for k in states[0][1])
