"""Training speed of the study's trained arms, side by side: each arm's own `endprompt.study.extension_config` on
the shipped study base, shortened to ``--steps`` optimizer steps, the arms alternating (A B C A B C ...) ``--reps``
times in one run, so that a machine whose speed drifts (other jobs) hits every arm alike.

Reported per arm: median physical tokens/s of the training loop (`TrainResult.tokens_per_s`, model loading excluded)
and its ratio to the reference arm (``--reference``, default full-length fine-tuning) per repetition, median and
spread. This is how a study row whose run was timed under other conditions (another thread count, a loaded machine)
is placed beside the others: by its measured ratio to an arm timed in the study.

    OMP_NUM_THREADS=1 python benchmarks/bench_study_arms.py --methods full,longlora --steps 20 --reps 3 \
        --json benchmarks/results/study_arms.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch


def main(argv=None) -> dict:
    from endprompt.reproduce import _base
    from endprompt.study import PRESETS, TRAINED, extension_config
    from endprompt.train import train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="full,longlora", help="trained arms of the study, comma-separated")
    parser.add_argument("--reference", default="full")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--preset", default="study")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    unknown = [m for m in methods + [args.reference] if m not in TRAINED]
    if unknown:
        parser.error(f"not trained arms of the study: {unknown}; arms are {', '.join(TRAINED)}")
    if args.reference not in methods:
        methods.insert(0, args.reference)
    cfg = replace(PRESETS[args.preset], progress=False)
    base = _base(cfg)
    speeds: dict[str, list[float]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for method in methods:
                run = Path(tmp) / f"{method}-{rep}"
                tc = extension_config(cfg, method, base, 0, run)
                tc = replace(tc, optim=replace(tc.optim, max_steps=args.steps))
                speeds[method].append(train(tc).tokens_per_s)
    ref = speeds[args.reference]
    out = {"machine": f"{platform.machine()} {os.cpu_count()}-core, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end",
           "steps": args.steps, "reps": args.reps, "reference": args.reference, "arms": {}}
    for method, values in speeds.items():
        ratios = [v / r for v, r in zip(values, ref)]
        out["arms"][method] = {"tokens_per_s": values, "median_tokens_per_s": statistics.median(values),
                               "speed_vs_reference": {"median": statistics.median(ratios), "min": min(ratios),
                                                      "max": max(ratios)}}
        print(f"{method:18s} {statistics.median(values):9.0f} tokens/s   x{statistics.median(ratios):.2f} of "
              f"{args.reference} (min {min(ratios):.2f}, max {max(ratios):.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
