"""Evaluation throughput of the tiny model: prompt (prefill) tokens/s and generated tokens/s with the KV cache, at
context lengths 2K and 8K, side by side in one run.

    python benchmarks/bench_eval.py [--lengths 2048,8192] [--batch 4] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from endprompt import modeling
from endprompt import rope as R


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2048,8192")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = modeling.build_tiny_llama(rope=R.for_extension("linear", 256, 2048, rope_theta=1e4),
                                      max_position_embeddings=2048)
    rows = []
    print(f"tiny Llama ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), batch {args.batch}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'length':>7}{'prompt tok/s':>14}{'generated tok/s':>17}")
    for length in [int(x) for x in args.lengths.split(",")]:
        ids = torch.randint(0, 256, (args.batch, length - args.new_tokens))
        mask = torch.ones_like(ids)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)  # warm-up
            start = time.perf_counter()
            for _ in range(args.repeats):
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            prefill = (time.perf_counter() - start) / args.repeats
            start = time.perf_counter()
            for _ in range(args.repeats):
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
            total = (time.perf_counter() - start) / args.repeats
        prompt_rate = ids.numel() / prefill
        gen_rate = args.batch * args.new_tokens / max(total - prefill, 1e-9)  # decoding time = generate - its prefill
        rows.append({"length": length, "prompt_tokens_per_s": prompt_rate, "generated_tokens_per_s": gen_rate})
        print(f"{length:>7}{prompt_rate:>14.0f}{gen_rate:>17.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
