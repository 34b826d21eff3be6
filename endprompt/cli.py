"""The ``endprompt`` command line: a thin layer over plain functions (imports stay inside the subcommands so that
``endprompt --help`` is instant)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def demo(out_dir: Path, samples: int = 256, seed: int = 0) -> None:
    """Quick end-to-end check of the foundation at the paper's setting (a=8192, b=20, 8K -> 64K).

    1. For every recipe, the share of relative distances in [0, L-1] its samples expose (union over ``samples``
       samples; Eq. 8-9 for EndPrompt), written to ``out_dir/coverage.csv``.
    2. The bandwidth sigma (Eq. 3) of each RoPE scaling at s = 8.
    3. A tiny random Llama fed an EndPrompt batch with the collator's explicit mask: the terminal segment's logits
       change when the first token changes (it attends to the head across the position jump), and do not without it.
    """
    import numpy as np
    import pandas as pd
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from endprompt import positions as P
    from endprompt import rope as R
    from endprompt.batching import RECIPES, Collator, Recipe, model_inputs

    a, b, L, original = 8192, 20, 65536, 8192
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    docs = [rng.integers(3, 1000, size=2 * L) for _ in range(8)]
    cue_ids = [np.arange(3, 14), np.array([1]), np.array([20, 21])]
    rows = []
    for name in RECIPES:
        col = Collator(Recipe(name=name, a=a, b=b, target_len=L), pad_token_id=0, cue_ids=cue_ids, seed=seed)
        observed = np.zeros((0, 2), dtype=np.int64)
        for i in range(samples):
            s = col.samples([docs[i % len(docs)]])[0]
            observed = P.merge_intervals(np.concatenate([observed, P.observed_distances(s.position_ids)]))
        covered = P.interval_count(observed)  # every layout keeps its distances inside [0, L-1]
        rows.append({"recipe": name, "physical_len": Recipe(name=name, a=a, b=b, target_len=L).physical_len,
                     "samples": samples, "distances_covered": covered, "share_of_target": covered / L})
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "coverage.csv", index=False)
    print(f"Relative distances in [0, {L - 1}] seen by {samples} samples of each recipe (a={a}, b={b}):")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))

    print(f"\nBandwidth sigma = max inv_freq (Eq. 3) at s = {L // original}, head_dim 128:")
    for rope_type in ("linear", "ntk", "dynamic", "yarn", "llama3"):
        cfg = R.for_extension(rope_type, original, L)
        print(f"  {rope_type:<8} sigma = {R.bandwidth(cfg, 128, seq_len=L):.4f}")

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         **R.transformers_config_kwargs(R.for_extension("linear", original, L), L))
    model = LlamaForCausalLM(config).eval()
    col = Collator(Recipe(name="endprompt", a=512, b=b, target_len=L), pad_token_id=0, cue_ids=cue_ids, seed=seed)
    batch = col([docs[0]])
    seg2 = batch["segment_ids"][0] == 2
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][0, 0] += 1
    with torch.no_grad():
        run = lambda bt, mask: model(**{k: v for k, v in model_inputs(bt).items() if mask or k != "attention_mask"},
                                     use_cache=False).logits[0, seg2]
        with_mask = (run(changed, True) - run(batch, True)).abs().max().item()
        without = (run(changed, False) - run(batch, False)).abs().max().item()
    print(f"\nTiny Llama, EndPrompt batch (positions 0..511 then {L - int(seg2.sum())}..{L - 1}): changing token 0 "
          f"moves the terminal logits by {with_mask:.3g} with the collator's mask, {without:.3g} without")
    if not with_mask > 1e-4:
        raise SystemExit("FAILED: the terminal segment does not attend to the head")
    print(f"\nwrote {out_dir / 'coverage.csv'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="endprompt", description="Context extension of RoPE LMs with short sequences")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="quick end-to-end check of layouts, RoPE scalings and masks")
    p.add_argument("--out", type=Path, default=Path("results/demo"))
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.out, args.samples, args.seed)


if __name__ == "__main__":
    main(sys.argv[1:])
