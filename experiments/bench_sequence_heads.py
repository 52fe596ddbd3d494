"""label_attention's output layer, old V-form against the restructured form: step time and peak memory.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 5 python experiments/bench_sequence_heads.py --out runs/bench_seq.json

Both variants hold the same parameters (``value`` d → dh, ``proj`` dh → da, ``attention`` da → L, ``out`` dh → L;
default widths dh = 512, da = 256) and compute the same logits (dropout on the value vectors ``H'`` in both). The
V-form (:class:`VFormLabelAttention`, the heads' first version, kept here as the reference) builds every label's
representation ``V = Aᵀ H' [B, L, dh]`` and scores it row-wise, ``⟨β_l, V_l⟩ + b_l``; the new form
(:class:`fedicd.heads_sequence.LabelAttention`) scores every chunk with the ``nn.Linear`` ``out`` (``[B, T, L]``)
and pools those scores with the attention weights.

Time: one forward and backward pass in train mode (HybridLoss, mean) per measurement, one thread, the variants
interleaved (round-robin, order alternating each round) ``--repeats`` times; medians and the ratio
old / new come from the same run. Memory: each variant runs ``--mem-steps`` steps in a fresh subprocess, which
reports the growth of its peak resident set (VmHWM, reset just before the first step, when model, batch and
labels are built) over its resident set then (:func:`memory_child`), next to the analytic size of the largest
intermediate tensor that differs: ``V [B, L, dh]`` for the V-form, ``[B, T, L]`` for the new form (float32; both
also hold the value vectors ``[B, T, dh]``). ``--shapes tiny`` checks that the script runs.
Every note has all T chunks (the largest batch of that shape). Writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from fedicd.heads_sequence import VALUE_WIDTH, LabelAttention, masked_softmax
from fedicd.losses import HybridLoss
from fedicd.sequences import pack, unpack

SHAPES = {"large": (64, 8, 1024, 1000), "small": (32, 8, 384, 322), "tiny": (4, 3, 16, 10)}  # (B, T, d, L)
DEFAULT_SHAPES = ["large", "small"]
VARIANTS = ("v_form", "restructured")
FLOAT_BYTES = 4


class VFormLabelAttention(LabelAttention):
    """The reference: the same parameters, logits through ``V = Aᵀ H' [B, L, dh]`` (then β row-wise)."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x, mask = unpack(batch)
        h = self.drop(self.values(self.inp(x)))  # H' [B, T, dh]
        weights = masked_softmax(self.attention(self.project(h)), mask[..., None], dim=1)  # [B, T, L]
        v = weights.transpose(1, 2) @ h  # [B, L, dh]
        return (v * self.out.weight).sum(-1) + self.out.bias


def build(variant: str, shape: tuple[int, int, int, int], seed: int = 0):
    """The variant's model (train mode) and a batch ``[B, T, 1 + d]`` with labels ``[B, L]``."""
    batch, steps, dim, labels = shape
    torch.manual_seed(seed)
    cls = VFormLabelAttention if variant == "v_form" else LabelAttention
    model = cls(dim, labels).train()
    x = pack(torch.randn(batch, steps, dim), torch.ones(batch, steps, dtype=torch.bool))
    y = (torch.rand(batch, labels) < 0.01).float()
    return model, x, y


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> None:
    """One forward and backward pass (gradients dropped after)."""
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()


def largest_intermediate_bytes(variant: str, shape: tuple[int, int, int, int]) -> int:
    """Analytic size of the activation that differs: ``V [B, L, dh]`` or the scores ``[B, T, L]``."""
    batch, steps, _, labels = shape
    return FLOAT_BYTES * batch * labels * (VALUE_WIDTH if variant == "v_form" else steps)


def same_logits(built: dict) -> float:
    """Largest |logit difference| of the two variants in eval mode (same seed, so the same parameters)."""
    (old, x, _), (new, _, _) = built["v_form"], built["restructured"]
    old.eval(), new.eval()
    with torch.no_grad():
        gap = float((old(x) - new(x)).abs().max())
    old.train(), new.train()
    return gap


def time_variants(shape: tuple[int, int, int, int], repeats: int, warmup: int) -> dict:
    """Interleaved wall-clock seconds per forward+backward; medians and the old/new ratio."""
    loss_fn = HybridLoss()
    built = {v: build(v, shape) for v in VARIANTS}
    for variant in VARIANTS:
        for _ in range(warmup):
            step(*built[variant], loss_fn)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(repeats):
        for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            start = time.perf_counter()
            step(*built[variant], loss_fn)
            seconds[variant].append(time.perf_counter() - start)
    medians = {v: statistics.median(s) for v, s in seconds.items()}
    return {"max_abs_logit_difference_eval": same_logits(built), "seconds": seconds, "median_s": medians, "ratio_v_form_over_restructured":
            medians["v_form"] / medians["restructured"]}


def _status_kib(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_child(variant: str, shape: tuple[int, int, int, int], steps: int) -> dict:
    """Run in a fresh process: peak-RSS growth (bytes) over ``steps`` forward+backward passes.

    The import of torch leaves a high-water mark above a step's needs, so the peak is reset first (Linux:
    ``5`` → /proc/self/clear_refs resets VmHWM) and the growth is VmHWM after the steps minus VmRSS before.
    (``ru_maxrss`` cannot serve: it is not resettable and survives ``execve``, so a child starts from its
    parent's peak.)
    """
    torch.set_num_threads(1)
    model, x, y = build(variant, shape)
    loss_fn = HybridLoss()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    for _ in range(steps):
        step(model, x, y, loss_fn)
    peak = _status_kib("VmHWM")
    return {"peak_rss_growth_bytes": (peak - before) * 1024, "rss_before_bytes": before * 1024}


def measure_memory(variant: str, shape_name: str, steps: int) -> dict:
    """:func:`memory_child` in a subprocess (a fresh peak-RSS high-water mark per variant)."""
    out = subprocess.run([sys.executable, __file__, "--child", variant, shape_name, "--mem-steps", str(steps)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_sequence_heads.json"))
    ap.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, choices=list(SHAPES))
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--mem-steps", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "SHAPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(memory_child(args.child[0], SHAPES[args.child[1]], args.mem_steps)))
        return
    torch.set_num_threads(1)
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": args.repeats,
               "command": " ".join(sys.argv), "shapes": {}}
    for name in args.shapes:
        shape = SHAPES[name]
        entry = {"B_T_d_L": list(shape), **time_variants(shape, args.repeats, args.warmup), "memory": {}}
        for variant in VARIANTS:
            entry["memory"][variant] = {**measure_memory(variant, name, args.mem_steps),
                                        "largest_intermediate_bytes": largest_intermediate_bytes(variant, shape)}
        mem = entry["memory"]
        entry["peak_growth_ratio_v_form_over_restructured"] = (
            mem["v_form"]["peak_rss_growth_bytes"] / max(1, mem["restructured"]["peak_rss_growth_bytes"]))
        results["shapes"][name] = entry
        print(json.dumps({name: {k: v for k, v in entry.items() if k != "seconds"}}, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
