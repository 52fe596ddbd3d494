"""DP-SGD step time / non-private step time for a head (default: the MLP, input 1024, 1,267 labels, batch 256).

    python experiments/bench_dp_step.py --out runs/bench_dp
    python experiments/bench_dp_step.py --head label_attention --chunks 8 --input-dim 384 --labels 322 --batch 32

One process, one run: the same head, data and AdamW optimizer; a non-private
step (HybridLoss mean, backward, AdamW) against DP-SGD steps (per-sample
HybridLoss, clipping at C = 1, Gaussian noise, AdamW) with per-sample norms
from fedicd's fused clipping, Opacus' ghost clipping and Opacus' hooks (fused
only where every layer of the head has a fused norm).
Timings are interleaved (round-robin over the methods, ``--repeats`` rounds of
``--steps`` steps each) so machine noise hits all alike; reports medians and
the ratio of each to the non-private median. Threads: ``--threads`` (default 2).

``--head`` picks any registered head (``train.head``); a chunk-sequence head
(:data:`fedicd.heads.SEQUENCE_HEADS`) reads packed batches ``[B, T, 1 + d]``
(:mod:`fedicd.sequences`) of notes with random lengths 1 … ``--chunks``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fedicd.heads import SEQUENCE_HEADS, build_head, count_parameters
from fedicd.losses import HybridLoss
from fedicd.privacy.accounting import DPPlan
from fedicd.privacy.dp_sgd import DPStepper
from fedicd.privacy.fused_clipping import unsupported_layers
from fedicd.sequences import pack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_dp"))
    ap.add_argument("--input-dim", type=int, default=1024)
    ap.add_argument("--labels", type=int, default=1267)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=["non-private", "fused", "ghost", "hooks"])
    ap.add_argument("--head", default="mlp", help="a registered head (train.head)")
    ap.add_argument("--chunks", type=int, default=8, help="longest note, in chunks (chunk-sequence heads only)")
    ap.add_argument("--hidden", type=int, nargs="+", default=None, help="train.hidden of the head (default: its own)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = _inputs(args)
    y = (torch.rand(args.batch, args.labels) < 5 / args.labels).float()
    if "fused" in args.methods and unsupported_layers(build_head(args.head, args.input_dim, args.labels, hidden=args.hidden)):
        print(f"fused clipping does not apply to head {args.head!r}: "
              f"{unsupported_layers(build_head(args.head, args.input_dim, args.labels, hidden=args.hidden))}")
        args.methods = [m for m in args.methods if m != "fused"]
    plan = DPPlan(n=args.batch * 10, sample_rate=0.1, steps_per_epoch=10, total_steps=10, noise_multiplier=1.0,
                  delta=1e-5, target_epsilon=0.0)
    runners = {}
    for name in args.methods:
        model = build_head(args.head, args.input_dim, args.labels, hidden=args.hidden)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)
        if name == "non-private":
            loss_fn = HybridLoss()

            def step(model=model, opt=opt, loss_fn=loss_fn):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
        else:
            stepper = DPStepper(model, opt, HybridLoss(), plan, clip=1.0, clipping=name,
                                noise_generator=torch.Generator().manual_seed(0))

            def step(stepper=stepper):
                stepper.step(x, y)
        runners[name] = step
    params = count_parameters(build_head(args.head, args.input_dim, args.labels, hidden=args.hidden))
    for step in runners.values():  # warm-up
        for _ in range(2):
            step()
    times: dict[str, list[float]] = {n: [] for n in runners}
    for _ in range(args.repeats):
        for name, step in runners.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    base = statistics.median(times["non-private"]) if "non-private" in times else float("nan")
    report = {"head": args.head, **({"hidden": args.hidden} if args.hidden else {}), **({"chunks": args.chunks} if args.head in SEQUENCE_HEADS else {}),
              "input_dim": args.input_dim, "labels": args.labels, "batch": args.batch, "parameters": params,
              "threads": args.threads, "steps_per_timing": args.steps, "repeats": args.repeats,
              "median_step_ms": {n: 1e3 * statistics.median(t) for n, t in times.items()},
              "ratio_to_non_private": {n: statistics.median(t) / base for n, t in times.items()},
              "all_step_ms": {n: [1e3 * v for v in t] for n, t in times.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dp_step.json").write_text(json.dumps(report, indent=2))
    if args.head == "mlp":
        print(f"MLP head {args.input_dim}->512->{args.labels} ({params:,} parameters), batch {args.batch}, "
              f"{args.threads} threads")
    else:
        shape = f"[{args.batch}, <={args.chunks}, 1+{args.input_dim}]" if args.head in SEQUENCE_HEADS else \
            f"[{args.batch}, {args.input_dim}]"
        print(f"{args.head} head, {args.labels} labels ({params:,} parameters), batches {shape}, "
              f"{args.threads} threads")
    print(f"{'method':<14}{'median ms/step':>16}{'× non-private':>15}")
    for n in times:
        print(f"{n:<14}{report['median_step_ms'][n]:>16.2f}{report['ratio_to_non_private'][n]:>15.2f}")


def _inputs(args: argparse.Namespace) -> torch.Tensor:
    """``[B, d]`` vectors, or for a chunk-sequence head packed ``[B, T, 1 + d]`` notes of 1 … ``--chunks`` chunks."""
    if args.head not in SEQUENCE_HEADS:
        return torch.randn(args.batch, args.input_dim)
    if args.chunks < 1:
        raise SystemExit(f"--chunks must be >= 1, got {args.chunks}")
    lengths = torch.randint(1, args.chunks + 1, (args.batch,))
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    return pack(torch.randn(args.batch, mask.shape[1], args.input_dim), mask)


if __name__ == "__main__":
    main()
