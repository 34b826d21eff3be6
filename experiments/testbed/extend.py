"""Issue 13's extension criterion on one base: extend it with the study's trained arms (default: full-length
fine-tuning, the gold standard) under PI, and evaluate each at points of its budget (learning curves).

The base is a `endprompt.study_base.StudyBase` given as name=value settings over `endprompt.testbed.TESTBED`, as for
`screen.py`; a base the search pretrained is found in the same cache (`endprompt.study_base.base_run_dir`). Each run is
`endprompt.reproduce.run_study` with a `StudyConfig` built here from typed values: evaluation at ``L0/2``, ``L0`` and
the target with ``--samples`` prompts per cell (issue 13: >= 24), passkey, compact niah_single_1, one needle depth,
held-out perplexity. Results go to ``<out>/<base key>/<extension tag>/`` (resumable per arm and per curve point) and
the criterion check is printed: full-length keeps >= 80% passkey at L0 and reaches >= 50% at the target.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python experiments/testbed/extend.py L0=256 num_heads=4 steps=3000 batch=16 \
        docs=32768 mixed_precision=no --tokens 8000000 --curve 0.125,0.25,0.5,1 --cache /work/cache-testbed
"""

import argparse
from pathlib import Path

import pandas as pd
import torch

from endprompt.reproduce import run_study
from endprompt.study import Extension, StudyConfig
from endprompt.study_base import StudyBase
from endprompt.testbed import TESTBED

CRITERION = {"L0": 80.0, "target": 50.0}
"""Issue 13: after the 8x PI extension, full-length fine-tuning keeps >= 80% passkey at L0 and reaches >= 50% at 8 L0
(mean of 3 seeds)."""


def extension_tag(ext: Extension, methods: tuple[str, ...]) -> str:
    """The run directory of one extension setting: every field that shapes the training."""
    shared = "-shared" if ext.shared_documents else ""
    return (f"{'+'.join(methods)}-x{ext.factor}-t{ext.tokens}-bt{ext.batch_tokens}-d{ext.docs}-lr{ext.lr:g}"
            f"-{ext.schedule}-w{ext.warmup}{shared}")


def passkey_curve(out: Path, cfg: StudyConfig) -> pd.DataFrame:
    """Passkey exact match per method, budget fraction and length (mean over seeds): one row per method and point."""
    curves = pd.read_csv(out / "curves.csv")
    pk = curves[(curves["suite"] == "passkey") & (curves["metric"] == "accuracy") & (curves["status"] == "ok")]
    table = pk.pivot_table(index=["method", "budget_fraction", "steps", "train_tokens"], columns="length",
                           values="score", aggfunc="mean").reset_index()
    table.columns = [c if isinstance(c, str) else f"pk_{c}" for c in table.columns]
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", help="StudyBase fields as name=value, over endprompt.testbed.TESTBED")
    parser.add_argument("--methods", default="full", help="comma-separated arms of endprompt.study.TRAINED")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=Extension.tokens, help="physical tokens per arm")
    parser.add_argument("--batch-tokens", type=int, default=Extension.batch_tokens)
    parser.add_argument("--docs", type=int, default=Extension.docs)
    parser.add_argument("--lr", type=float, default=Extension.lr)
    parser.add_argument("--warmup", type=int, default=Extension.warmup)
    parser.add_argument("--per-recipe-documents", action="store_true",
                        help="build the documents at each recipe's own length (the committed study) instead of the "
                             "shared documents of L0/4 .. target")
    parser.add_argument("--curve", default="0.25,0.5,1", help="fractions of the budget to evaluate at")
    parser.add_argument("--samples", type=int, default=24, help="prompts per cell")
    parser.add_argument("--out", default="results/testbed/extension")
    parser.add_argument("--cache", default="cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = StudyBase.from_overrides(args.settings, TESTBED)
    ext = Extension(factor=args.factor, tokens=args.tokens, batch_tokens=args.batch_tokens, docs=args.docs,
                    lr=args.lr, warmup=args.warmup, shared_documents=not args.per_recipe_documents)
    methods = tuple(args.methods.split(","))
    out = Path(args.out) / base.key / extension_tag(ext, methods)
    cfg = StudyConfig(name="extension", out_dir=str(out), cache_dir=args.cache, base=base, extension=ext,
                      methods=methods, seeds=tuple(int(s) for s in args.seeds.split(",")),
                      eval_lengths=(base.L0 // 2, base.L0, ext.factor * base.L0), eval_samples=args.samples,
                      needle_depths=(0.5,), needle_samples=2, tasks=("niah_single_1",),
                      curve=tuple(float(f) for f in args.curve.split(",")))
    print(out, flush=True)
    run_study(cfg)
    table = passkey_curve(out, cfg)
    print(table.to_string(index=False))
    last = table[(table["method"] == "full") & (table["budget_fraction"] == 1.0)]
    if len(last):
        L0, target = last[f"pk_{base.L0}"].iloc[0], last[f"pk_{cfg.target_len}"].iloc[0]
        met = L0 >= CRITERION["L0"] and target >= CRITERION["target"]
        print(f"full-length passkey: {L0:.0f}% at L0, {target:.0f}% at the target; criterion "
              f"(>= {CRITERION['L0']:.0f} / >= {CRITERION['target']:.0f}) {'met' if met else 'not met'}")


if __name__ == "__main__":
    main()
