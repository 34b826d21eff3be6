"""SharedLLM at 16x its training length: the study's SharedLLM (trained on 512 = L0 + 4 chunks) evaluated at 8192
tokens, beyond the study's lengths (128..4096), with the study's protocol (`endprompt.reproduce._evaluate`'s tasks,
prompts seeded 1000 + seed, 16 passkey prompts, needle grid 5 depths x 2, sliding-window perplexity with the study's
stride 2048 on the same held-out text), and at 512 as a check that each model is the study's (its rows there must
equal `results/study/results.csv`'s).

    OMP_NUM_THREADS=1 python experiments/sharedllm_16x.py --model 0=<dir> --model 1=<dir> ... [--out CSV]

A seed without ``--model`` is trained here with the study's configuration (`extension_config`, the study's run).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pandas as pd


def main() -> None:
    from endprompt.evaluate import evaluate
    from endprompt.reproduce import _base, _heldout_docs, load_trained
    from endprompt.study import PRESETS, extension_config
    from endprompt.tokenizer import load_tokenizer
    from endprompt.train import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", action="append", default=[], help="SEED=DIR: a saved SharedLLM of that seed")
    parser.add_argument("--lengths", default="512,8192")
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--out", default="results/study/sharedllm_16x.csv")
    args = parser.parse_args()
    cfg = replace(PRESETS["study"], cache_dir=args.cache_dir, progress=False)
    given = {int(k): Path(v) for k, v in (m.split("=", 1) for m in args.model)}
    base = _base(cfg)
    tokenizer = load_tokenizer(None, base)
    docs = _heldout_docs(tokenizer, cfg)  # the study's held-out text (documents of 4 x 4096 tokens)
    stride = max(cfg.eval_lengths) // 2  # the study's sliding-window stride
    lengths = [int(x) for x in args.lengths.split(",")]
    frames = []
    for seed in (int(s) for s in args.seeds.split(",")):
        path = given.get(seed)
        if path is None:
            out = Path(args.cache_dir) / f"study-sharedllm-seed{seed}"
            if not (out / "final" / "sharedllm.json").exists():
                train(extension_config(cfg, "sharedllm", base, seed, out))
            path = out / "final"
        model = load_trained("sharedllm", path)
        kw = {"num_samples": cfg.eval_samples, "seed": 1000 + seed, "style": "compact", "progress": False,
              "model_name": "sharedllm", "batch_size": 8}
        table = pd.concat([
            evaluate(model, tokenizer, "synthetic", lengths, tasks=list(cfg.tasks), **kw),
            evaluate(model, tokenizer, "passkey", lengths, **kw),
            evaluate(model, tokenizer, "needle", lengths, depths=cfg.needle_depths,
                     **(kw | {"num_samples": cfg.needle_samples})),
            evaluate(model, tokenizer, "perplexity", lengths, ppl_docs=docs, ppl_stride=stride, **kw)],
            ignore_index=True).assign(seed=seed, method="sharedllm")
        frames.append(table)
        print(table[table["status"] == "ok"][["seed", "task", "length", "metric", "score"]].to_string(index=False),
              flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True).to_csv(args.out, index=False)  # after each seed: a partial run keeps some
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
