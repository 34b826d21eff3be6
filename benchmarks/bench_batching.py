"""Batch-construction throughput of every recipe, side by side in one run.

Setting of the paper: a = 8192, b = 20, target_len = 65536, batch 8, documents pre-tokenized (random ids from a 128K
vocabulary, 3 * target_len tokens each so every recipe has room to skip). Measures real (non-padding) tokens per second
through `Collator.__call__` (sample cutting, positions, padding, tensors) and the packed form. Goal: >= 1M tokens/s.

    python benchmarks/bench_batching.py [--seconds 2] [--json benchmarks/results/batching.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from endprompt.batching import Collator
from endprompt.recipe import RECIPES, Recipe


def measure(collator: Collator, docs: list[np.ndarray], batch_size: int, seconds: float) -> tuple[float, int]:
    """Tokens/s over repeated batches for at least ``seconds``; returns (tokens_per_s, batches)."""
    tokens, batches, start = 0, 0, time.perf_counter()
    while True:
        i = (batches * batch_size) % (len(docs) - batch_size)
        batch = collator(docs[i : i + batch_size])
        tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        batches += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and batches >= 3:
            return tokens / elapsed, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=int, default=8192)
    parser.add_argument("--b", type=int, default=20)
    parser.add_argument("--target-len", type=int, default=65536)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 128_000, size=3 * args.target_len) for _ in range(4 * args.batch_size)]
    cue_ids = [rng.integers(0, 128_000, size=n) for n in (11, 1, 2)]  # the paper's three cues, tokenized
    rows = []
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"a={args.a} b={args.b} L={args.target_len} batch={args.batch_size}")
    print(f"{'recipe':<18}{'form':<8}{'tokens/batch':>14}{'M tokens/s':>12}{'x goal':>8}")
    for name in RECIPES:
        recipe = Recipe(name=name, a=args.a, b=args.b, target_len=args.target_len)
        for packed in (False, True):
            col = Collator(recipe, pad_token_id=0, cue_ids=cue_ids, seed=0, packed=packed)
            rate, batches = measure(col, docs, args.batch_size, args.seconds)
            per_batch = col(docs[: args.batch_size])["input_ids"].numel()
            form = "packed" if packed else "padded"
            rows.append({"recipe": name, "form": form, "tokens_per_batch": per_batch, "tokens_per_s": rate,
                         "batches": batches})
            print(f"{name:<18}{form:<8}{per_batch:>14}{rate / 1e6:>12.1f}{rate / 1e6:>8.0f}")
    worst = min(r["tokens_per_s"] for r in rows)
    print(f"slowest: {worst / 1e6:.1f}M tokens/s ({'meets' if worst >= 1e6 else 'MISSES'} the 1M tokens/s goal)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
