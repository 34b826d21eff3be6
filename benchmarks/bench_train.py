"""Training cost of EndPrompt (physical a+b tokens) against full-length fine-tuning (physical = target), side by side.

Both train at the same target length. Each measurement runs in its own process (peak memory is its own), and the two
recipes alternate, ABAB..., ``--reps`` times each in one run, so that a machine whose speed drifts (other jobs, clock
boost) hits both alike: the ratio is taken per adjacent pair and reported as median and spread (min..max over pairs).

Two modes:

- throughput (default): the same tokens per optimizer step for both (EndPrompt packs target/(a+b) times more
  sequences per step); tokens/s and the FLOP-model ratio

      FLOPs per token = 6 N + 6 n_layers T d      (N parameters; causal attention over a physical length T, width d)

  so EndPrompt's predicted speed-up is FLOPs/token(full) / FLOPs/token(EndPrompt). Goal: measured >= 0.9 x predicted.
- ``--per-sequence``: one sequence per micro-batch, a+b tokens (EndPrompt) vs target tokens (full): the setting of the
  paper's memory claim (36.52 vs 76.00 GB for Llama-3-8B at 64K). Memory and seconds per sequence.

On CPU, "peak GB" is the process's peak resident memory (mostly the runtime) and "training GB" what the training
steps added to it (activations, gradients, optimizer state); on GPU both are torch's peak allocated memory.

    python benchmarks/bench_train.py                      # tiny model on CPU, 256 (EndPrompt) vs 2048 (full)
    python benchmarks/bench_train.py --per-sequence       # the same, one sequence per micro-batch
    python benchmarks/bench_train.py --gpu                # Llama-3-8B shape, random weights, bf16, gradient
                                                          # checkpointing, 8192+20 vs 65536, forward+backward
    python benchmarks/bench_train.py --gpu --shape smollm2-135m   # the same for SmolLM2-135M (real-64k's model)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

SHAPES = {
    "tiny": {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4, "intermediate_size": 512,
             "vocab_size": 260},
    "llama3-8b": {"hidden_size": 4096, "num_layers": 32, "num_heads": 32, "num_kv_heads": 8,
                  "intermediate_size": 14336, "vocab_size": 128256},
    # SmolLM2-135M (the smollm2-135m alias, the real-64k preset's model): GQA 9/3, head_dim 64, tied embeddings
    "smollm2-135m": {"hidden_size": 576, "num_layers": 30, "num_heads": 9, "num_kv_heads": 3,
                     "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True},
}


def worker(args) -> dict:
    import numpy as np
    import torch

    from endprompt import modeling
    from endprompt import rope as R
    from endprompt.batching import Collator, model_inputs
    from endprompt.recipe import Recipe
    from endprompt.train import weighted_cross_entropy

    shape = SHAPES[args.shape]
    device = "cuda" if args.gpu else "cpu"
    torch.manual_seed(0)
    rope = R.for_extension("linear", args.original, args.target, rope_theta=10000.0)
    config = modeling.tiny_llama_config(rope=rope, max_position_embeddings=args.target, **shape)
    from transformers import LlamaForCausalLM

    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if args.gpu else torch.float32)
    if args.gpu:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    if args.recipe == "endprompt":
        recipe = Recipe("endprompt", a=args.a, b=args.b, target_len=args.target)
    else:
        recipe = Recipe("full", a=args.a, b=args.b, target_len=args.target)
    rng = np.random.default_rng(0)
    cue = [rng.integers(3, shape["vocab_size"], size=args.b)]
    collator = Collator(recipe, pad_token_id=0, cue_ids=cue, seed=0)
    per_step = 1 if args.per_sequence else args.tokens_per_step // recipe.physical_len
    docs = [rng.integers(3, shape["vocab_size"], size=args.target) for _ in range(per_step)]
    batch = {k: v.to(device) for k, v in collator(docs).items()}
    optimizer = None if args.gpu else torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        logits = model(**model_inputs(batch), use_cache=False).logits
        total, weight = weighted_cross_entropy(logits, batch["labels"], batch["loss_weights"])
        (total / weight).backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # model, data and runtime before training
    step()  # warm-up
    if args.gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.gpu:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens = int(batch["attention_mask"].sum()) * args.steps
    peak = torch.cuda.max_memory_allocated() if args.gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    growth = peak - (0 if args.gpu else baseline)  # on CPU: what training added to the peak resident memory
    n_params = sum(p.numel() for p in model.parameters())
    T, d, L = recipe.physical_len, shape["hidden_size"], shape["num_layers"]
    return {"recipe": args.recipe, "physical_len": T, "sequences_per_step": per_step, "tokens_per_s": tokens / elapsed,
            "seconds_per_sequence": elapsed / (args.steps * per_step),
            "peak_memory_gb": peak / 2**30, "training_memory_gb": growth / 2**30, "params": n_params,
            "flops_per_token": 6 * n_params + 6 * L * T * d,
            "device": torch.cuda.get_device_name() if args.gpu else platform.processor() or platform.machine()}


def run_worker(recipe: str, cfg: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", recipe, "--config", json.dumps(cfg)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}x (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--per-sequence", action="store_true", help="one sequence per micro-batch (memory claim)")
    parser.add_argument("--reps", type=int, default=5, help="measurements of each recipe, alternating (>= 5)")
    parser.add_argument("--shape", choices=["llama3-8b", "smollm2-135m"], default="llama3-8b",
                        help="the model shape of the --gpu run")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", choices=["endprompt", "full"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        cfg = argparse.Namespace(**json.loads(args.config))
        cfg.recipe = args.worker
        print(json.dumps(worker(cfg)))
        return
    if args.reps < 5:
        parser.error(f"--reps {args.reps}: a ratio on a shared machine needs >= 5 alternating repetitions")
    if args.gpu:
        cfg = {"shape": args.shape, "original": 8192, "target": 65536, "a": 8192, "b": 20,
               "tokens_per_step": 65536, "steps": args.steps or 3, "gpu": True}
    else:
        cfg = {"shape": "tiny", "original": 256, "target": 2048, "a": 240, "b": 16, "tokens_per_step": 2048 * 4,
               "steps": args.steps or 20, "gpu": False}
    cfg["per_sequence"] = args.per_sequence
    pairs = []
    for rep in range(args.reps):  # A B A B ...: each pair measured back to back
        pairs.append({recipe: run_worker(recipe, cfg) for recipe in ("endprompt", "full")})
        print(f"rep {rep + 1}/{args.reps}: endprompt {pairs[-1]['endprompt']['tokens_per_s']:.0f} tokens/s, "
              f"full {pairs[-1]['full']['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    speed = [p["endprompt"]["tokens_per_s"] / p["full"]["tokens_per_s"] for p in pairs]
    seq_time = [(p["full"]["seconds_per_sequence"] / p["endprompt"]["seconds_per_sequence"]) for p in pairs]
    memory = [p["full"]["training_memory_gb"] / max(p["endprompt"]["training_memory_gb"], 1e-9) for p in pairs]
    peak = [p["full"]["peak_memory_gb"] / p["endprompt"]["peak_memory_gb"] for p in pairs]
    ep, full = pairs[-1]["endprompt"], pairs[-1]["full"]
    predicted = full["flops_per_token"] / ep["flops_per_token"]
    mode = "one sequence per micro-batch" if args.per_sequence else f"{cfg['tokens_per_step']} tokens per step"
    print(f"{cfg['shape']} on {ep['device']}, target {cfg['target']}, {mode}, {args.reps} alternating reps each")
    print(f"{'recipe':<10}{'physical':>9}{'seq/step':>9}{'tokens/s':>12}{'s/seq':>9}{'peak GB':>9}{'training GB':>12}"
          f"{'GFLOP/token':>13}")
    for name in ("endprompt", "full"):
        runs = [p[name] for p in pairs]
        r = runs[-1]
        print(f"{name:<10}{r['physical_len']:>9}{r['sequences_per_step']:>9}"
              f"{statistics.median(x['tokens_per_s'] for x in runs):>12.0f}"
              f"{statistics.median(x['seconds_per_sequence'] for x in runs):>9.4f}"
              f"{statistics.median(x['peak_memory_gb'] for x in runs):>9.2f}"
              f"{statistics.median(x['training_memory_gb'] for x in runs):>12.3f}{r['flops_per_token'] / 1e9:>13.4f}")
    print("(medians over the reps)")
    print(f"speed ratio EndPrompt/full, tokens/s: {spread(speed)}; FLOP model {predicted:.2f}x "
          f"(median {statistics.median(speed) / predicted:.2f} of the model; goal >= 0.90)")
    if args.per_sequence:
        print(f"time per sequence full/EndPrompt: {spread(seq_time)}")
    print(f"training memory full/EndPrompt: {spread(memory)}; peak memory: {spread(peak)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "reps": args.reps, "pairs": pairs, "speed_ratios": speed,
                       "sequence_time_ratios": seq_time, "training_memory_ratios": memory, "peak_memory_ratios": peak,
                       "flop_model_ratio": predicted}, f, indent=2)


if __name__ == "__main__":
    main()
