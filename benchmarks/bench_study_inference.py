"""Inference cost of the study's trained SharedLLM beside its base with full attention, per study length.

For each length, one passkey prompt of the study (compact style) is answered by both models: prefill + greedy
generation of the answer budget, time (median of ``--repeats`` after a warm-up, every repetition kept) and peak
memory, each (model, length) in a fresh process, models alternating (`endprompt.inference_cost`). The base reads the
whole prompt with full attention and no RoPE scaling (cost, not quality: position interpolation does not change the
work). The SharedLLM is the study's seed-0 arm: trained here with the study's configuration
(`endprompt.study.extension_config`, exactly the study's run) unless ``--sharedllm`` gives a saved one; the study
itself keeps no weights.

    python benchmarks/bench_study_inference.py [--lengths 1024,2048,4096] [--repeats 5]
        [--out results/study/sharedllm_inference.csv] [--sharedllm DIR] [--cache-dir cache]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path


def trained_sharedllm(cache_dir: str, seed: int = 0) -> Path:
    """The study preset's SharedLLM of ``seed`` (trained once, kept under ``cache_dir``)."""
    from endprompt.reproduce import _base
    from endprompt.study import PRESETS, extension_config
    from endprompt.train import train

    cfg = replace(PRESETS["study"], cache_dir=cache_dir)
    out = Path(cache_dir) / f"study-sharedllm-seed{seed}"
    if not (out / "final" / "sharedllm.json").exists():
        train(extension_config(cfg, "sharedllm", _base(cfg), seed, out))
    return out / "final"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,2048,4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/study/sharedllm_inference.csv")
    parser.add_argument("--sharedllm", default=None, help="a saved SharedLLM (default: train the study's seed 0)")
    parser.add_argument("--cache-dir", default="cache")
    args = parser.parse_args()
    from endprompt.inference_cost import inference_cost, summarize_cost
    from endprompt.reproduce import _base
    from endprompt.study import PRESETS

    base = _base(replace(PRESETS["study"], cache_dir=args.cache_dir))
    shared = Path(args.sharedllm) if args.sharedllm else trained_sharedllm(args.cache_dir)
    table = inference_cost({"full": base, "sharedllm": shared}, [int(x) for x in args.lengths.split(",")],
                           repeats=args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(summarize_cost(table, "full").round(4).to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
