"""Learning curves of one or more `extend.py` runs on the same base, drawn together, and their passkey table.

    PYTHONPATH=$PWD python experiments/testbed/extension_figure.py \
        results/testbed/extension/<base key>/full-x8-t16384000-... \
        results/testbed/extension/<base key>/endprompt-x8-t16384000-... --name testbed_extension_16m

Each directory is an `extend.py` result (its ``curves.csv`` and ``study.json``); they must share the base and the
target, since the figure puts their methods on one axis of physical tokens. Draws passkey, its digit accuracy,
niah_single_1 and held-out perplexity at the target against physical tokens and wall time
(`endprompt.plotting.plot_learning_curves`, 95% interval over seeds) into ``figures/<name>.png``, the same at L0
into ``figures/<name>_L0.png`` (a method can trade L0's retrieval for the target's), and prints passkey
exact match at L0 and at the target per method, seed and budget point with the mean over seeds, the numbers issue 13's
extension criterion reads (>= 80% at L0, >= 50% at the target, mean of 3 seeds).
"""

import argparse
import json
from pathlib import Path

import pandas as pd

from endprompt import plotting
from endprompt.study_tables import curve_table, ok_rows


def load(dirs: list[Path]) -> tuple[pd.DataFrame, int, int]:
    """The runs' curves, one table, with the base's L0 and the target they share."""
    frames, shapes = [], set()
    for d in dirs:
        study = json.loads((d / "study.json").read_text())
        L0, target = study["base"]["L0"], max(study["eval_lengths"])
        shapes.add((json.dumps(study["base"], sort_keys=True), L0, target))
        frames.append(pd.read_csv(d / "curves.csv"))
    if len(shapes) != 1:
        raise ValueError(f"{[str(d) for d in dirs]} are runs on different bases or targets; draw each on its own")
    _, L0, target = shapes.pop()
    return pd.concat(frames, ignore_index=True), L0, target


def passkey_points(curves: pd.DataFrame, L0: int, target: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Passkey exact match at L0 and at the target per method, budget point and seed, then the mean over seeds."""
    pk = ok_rows(curves)
    pk = pk[(pk["task"] == "passkey") & (pk["metric"] == "accuracy") & pk["length"].isin([L0, target])]
    table = pk.pivot_table(index=["method", "budget_fraction", "train_tokens", "seed"], columns="length",
                           values="score").reset_index()
    table = table.rename(columns={L0: f"passkey at L0 ({L0})", target: f"passkey at the target ({target})"})
    scores = [c for c in table.columns if str(c).startswith("passkey")]
    mean = table.groupby(["method", "budget_fraction"], as_index=False).agg(
        train_tokens=("train_tokens", "mean"), seeds=("seed", "nunique"), **{c: (c, "mean") for c in scores})
    return table, mean


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="extend.py result directories on one base")
    parser.add_argument("--name", default="testbed_extension", help="figure name under figures/")
    args = parser.parse_args(argv)
    curves, L0, target = load(args.dirs)
    per_seed, mean = passkey_points(curves, L0, target)
    for table in (per_seed, mean):
        print(table.round({c: 1 for c in table.columns if str(c).startswith("passkey")}).to_string(index=False))
    for length, where, name in ((target, "the target length", args.name), (L0, "L0 =", f"{args.name}_L0")):
        print(plotting.save(plotting.plot_learning_curves(curve_table(curves, length), length, where), name))


if __name__ == "__main__":
    main()
