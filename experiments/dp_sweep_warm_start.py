"""The warm-started linear head's DP-GD step, tuned on the public stand-in corpus (never the evaluation federations).

    python experiments/dp_sweep_warm_start.py     # writes runs/mini_sweep/trials.json (archived in
                                                  # experiments/results/dp_sweep/warm_start_trials.json)

experiments/dp_sweep.py compares heads at one optimiser setting; this sweep asks, for the linear head initialised
from ICD-10-CM descriptions (full-batch DP-GD, clip 0.1, PLD, synthetic_public.toml), which local learning rate
refines the zero-shot coder and which erases it, at ε = 8 and ε = 1. Selection reads validation micro-F1 only.
"""
import json
import time
from pathlib import Path

from fedicd.config import load_config
from fedicd.runner.simulation import run_federated
base = ['privacy.dp="sample"', 'privacy.accountant="pld"', 'federated.engine="inprocess"',
        "federated.fraction_evaluate=0.0", "federated.min_evaluate=0", "train.batch_size=1000000", "privacy.clip=0.1",
        'federated.local_optimizer="sgd"', 'train.head="linear"', "train.dropout=0.0", 'warm_start.init="descriptions"']
trials = []
for eps in (8.0, 1.0):
    for extra in ([ "federated.local_lr=1.0"], ["federated.local_lr=10.0"], ["federated.local_lr=100.0"],
                  ['train.input_norm="l2"', "federated.local_lr=10.0"], ['train.input_norm="l2"', "federated.local_lr=100.0"]):
        o = [*base, f"privacy.target_epsilon={eps}", *extra]
        t = time.time()
        tag = f"eps{eps:g}_" + "_".join(e.split("=")[-1].strip('"') for e in extra)
        res = run_federated(load_config("experiments/configs/synthetic_public.toml", o), f"runs/mini_sweep/{tag}")
        row = {"eps": eps, "extra": extra, "val": res["val"]["micro_f1"], "test": res["test"]["micro_f1"],
               "zero_shot_val": res["warm_start"]["zero_shot"]["val"]["micro_f1"], "s": time.time() - t}
        trials.append(row); print(row, flush=True)
Path("runs/mini_sweep/trials.json").write_text(json.dumps(trials, indent=1))
