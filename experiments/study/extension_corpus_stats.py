"""What each trained arm of the study sees of the extension mixture's retrieval examples, before and after one shared
corpus (issue 13, "same documents for every method"). No training: corpora are built and cut as `endprompt.train`
cuts them, and `endprompt.mixture_coverage` counts the examples whose key and question-with-answer a sample holds.

Modes, per recipe (the study's endprompt, pose and full arms: byte tokenizer, L0 = 256, target 2048, the study's
mixture, ``--docs`` documents, seed 0):

- ``fixed``: today's extension data, `endprompt.mixture.build_mixture` at the recipe's own document length
  (`endprompt.recipe.full_doc_len`), one whole document per sample (``concat=False``);
- ``shared``: one `endprompt.mixture.build_shared_mixture` corpus (L0/4 .. 8 L0, log-uniform) for every recipe, cut
  as natural text (``concat=True``: ``sample_len(recipe)`` tokens of the EOS-separated stream) -- the chosen mode;
- ``shared-whole``: the same corpus, one whole document per sample (``concat=False``), the alternative.

Writes ``results/study/extension_corpus_stats.csv`` (one row per mode and recipe). About a minute of one core:

    OMP_NUM_THREADS=1 python experiments/study/extension_corpus_stats.py

``--preset study-bpe`` or ``study-bpe-long`` (the BPE base's tokenizer, the preset's document layout, `--arms`, default
one arm per cut, `BPE_ARMS`) measures the ``shared`` mode only, the one those studies train on:

    OMP_NUM_THREADS=1 python experiments/study/extension_corpus_stats.py --preset study-bpe \
        --out results/study-bpe/extension_corpus_stats.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from endprompt.config import RecipeConfig
from endprompt.mixture import build_mixture, build_shared_mixture
from endprompt.mixture_coverage import coverage
from endprompt.recipe import full_doc_len, recipe_spec, tokenize_cues
from endprompt.reproduce import SHIPPED
from endprompt.study import PRESETS, TRAINED
from endprompt.tokenizer import byte_tokenizer, load_tokenizer

ARMS = ("endprompt", "pose", "full")
BPE_ARMS = ("endprompt", "endprompt-end", "endprompt-eot", "endprompt-tail", "endprompt-random", "endprompt-pose",
            "pose", "full")  # one arm per cut: the YaRN arms and LongLoRA cut as endprompt and full do


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=None, help="mixture documents (default: the study's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--out", default="results/study/extension_corpus_stats.csv")
    parser.add_argument("--preset", default="study", choices=["study", "study-bpe", "study-bpe-long"])
    parser.add_argument("--arms", default=None, help="comma-separated trained arms (default: endprompt,pose,full for "
                        "the byte study, one arm per cut (BPE_ARMS) for the BPE ones)")
    args = parser.parse_args()
    study = PRESETS[args.preset]
    L0, target, mix = study.L0, study.target_len, study.base.mixture
    docs = args.docs or study.extension.docs
    byte = args.preset == "study"
    tok = byte_tokenizer() if byte else load_tokenizer(None, SHIPPED / study.base.key)
    arms = args.arms.split(",") if args.arms else ARMS if byte else BPE_ARMS
    rows = []
    shared = build_shared_mixture(mix, tok, (L0 // 4, 8 * L0), docs, args.seed, args.cache_dir,
                                  layout=study.extension.doc_layout)
    distance = shared.examples[:, 3] - shared.examples[:, 1]
    print(f"{args.preset} ({study.extension.doc_layout}): {len(distance)} examples, key-to-question distance above "
          f"4 L0: {(distance > 4 * L0).mean():.1%}, above 6 L0: {(distance > 6 * L0).mean():.1%}")
    for arm in arms:
        spec = TRAINED[arm]
        b = study.b_cue if recipe_spec(spec.recipe["name"]).uses_cues else study.b_tail
        recipe = RecipeConfig(a=L0 - b, b=b, target_len=target, **spec.recipe)  # as study.extension_config
        cues = tokenize_cues(recipe.cues, tok, recipe.b) if recipe.spec.uses_cues else None
        modes = (("shared", shared, True),)
        if byte:
            fixed = build_mixture(mix, tok, full_doc_len(recipe), docs, args.seed, args.cache_dir)
            modes = (("fixed", fixed, False), *modes, ("shared-whole", shared, False))
        for mode, corpus, concat in modes:
            start = time.perf_counter()
            row = coverage(corpus, recipe, concat, cues, args.seed, short=L0 // 4, long=2 * L0)
            rows.append({"mode": mode, "recipe": arm, "seed": args.seed, "docs": docs,
                         "layout": study.extension.doc_layout if mode != "fixed" else "fixed",
                         "corpus_tokens": corpus.num_tokens, "corpus_examples": len(corpus.examples), **row})
            print(f"{mode:>12} {arm:>9}: {row['examples_per_1m']:7.0f} whole examples / 1M tokens, distance "
                  f"q25/50/75 {row['distance_q25']:.0f}/{row['distance_median']:.0f}/{row['distance_q75']:.0f}, "
                  f"long {row[f'long_gt{2 * L0}_per_1m']:.0f} / 1M ({time.perf_counter() - start:.1f} s)")
    table = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4g")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
