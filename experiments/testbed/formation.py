"""When does a base's retrieval form, and does a later stage keep it? Teacher-forced answer accuracy of passkey and
compact niah_single_1 at every pretraining checkpoint of a base (`endprompt.evaluate.answer_probe.checkpoint_curve`).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python experiments/testbed/formation.py L0=256 num_heads=4 steps=3000 batch=16 \
        docs=32768 mixed_precision=no --cache /work/cache-testbed

The base is named by its settings over `endprompt.testbed.TESTBED`, as in `screen.py`; with two stages both are read
(the first stage's steps, then the second's counted on from them). Writes ``<out>/<key>.csv``: one row per stage, step,
task and length, with the machine; then draws every base's table in ``<out>`` into
``figures/testbed_formation.png``, each panel titled by the candidate's note in ``attempts.csv``.
"""

import argparse
from pathlib import Path

import pandas as pd
import torch

from endprompt import plotting
from endprompt.evaluate.answer_probe import checkpoint_curve
from endprompt.study_base import StudyBase, base_run_dir
from endprompt.testbed import TESTBED, machine


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", help="StudyBase fields as name=value, over endprompt.testbed.TESTBED")
    parser.add_argument("--samples", type=int, default=16, help="prompts per task, length and checkpoint")
    parser.add_argument("--out", default="results/testbed/formation")
    parser.add_argument("--cache", default="cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = StudyBase.from_overrides(args.settings, TESTBED)
    run = base_run_dir(base, args.cache)
    frames = []
    if base.short_steps:
        short = checkpoint_curve(run / "short", [base.short_L0 // 2, base.short_L0], num_samples=args.samples,
                                 model_dir=run / "short" / "final")
        frames.append(short.assign(stage="short"))
    long = checkpoint_curve(run, [base.L0 // 2, base.L0], num_samples=args.samples, model_dir=run / "final")
    frames.append(long.assign(stage="long" if base.short_steps else "single",
                              step=long["step"] + base.short_steps))
    table = pd.concat(frames, ignore_index=True).assign(key=base.key, machine=machine())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    table.to_csv(Path(args.out) / f"{base.key}.csv", index=False)
    print(table.pivot_table(index=["stage", "step"], columns=["task", "length"], values="token_accuracy")
          .round(0).to_string())
    draw(Path(args.out), Path(args.out).parent / "attempts.csv")


def draw(out: Path, attempts: Path) -> Path:
    """Every base's formation table in ``out`` as one figure, panels titled by the notes' candidate names."""
    table = pd.concat([pd.read_csv(f) for f in sorted(out.glob("*.csv"))], ignore_index=True)
    notes = pd.read_csv(attempts).set_index("key")["note"].to_dict() if attempts.exists() else {}
    names = {key: str(notes.get(key, key)).split(":")[0] + f" (L0 {key.split('-')[1][1:]})" for key in table["key"]}
    return plotting.save(plotting.plot_formation(table, names), "testbed_formation")


if __name__ == "__main__":
    main()
