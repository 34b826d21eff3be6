"""Screen one base candidate of issue 13's search (see `endprompt.testbed`); a thin CLI over `endprompt.testbed.screen`.

    python experiments/testbed/screen.py L0=1024 num_heads=2 rope_theta=10000 vocab_size=2048 steps=1000 \
        --note "first BPE candidate"

Heavy (minutes to tens of minutes): run it under the shared lock with one torch thread, e.g.
    nohup flock /tmp/endprompt-heavy.lock env OMP_NUM_THREADS=1 PYTHONPATH=$PWD python experiments/testbed/screen.py \
        ... > cache/testbed-<name>.log 2>&1 &
Resumable: an interrupted candidate continues from its last checkpoint; a finished one is not run again.
"""

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from endprompt.study_base import StudyBase
from endprompt.testbed import TESTBED, attempts_markdown, screen, screen_saved, spectrum


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", help="StudyBase fields as name=value, from endprompt.testbed.TESTBED "
                        "(L0, hidden_size, num_layers, num_heads, rope_theta, vocab_size, steps, batch, lr, warmup, "
                        "docs, mixture, mixed_precision, seed, short_L0, short_steps)")
    parser.add_argument("--out", default="results/testbed")
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--samples", type=int, default=24, help="prompts per cell (issue 13: >= 24)")
    parser.add_argument("--note", default="")
    parser.add_argument("--saved", help="screen this existing base directory instead (a reference row); give its L0")
    parser.add_argument("--table", action="store_true", help="print the attempts table as markdown and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the candidate and its spectrum only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.table:
        print(attempts_markdown(pd.read_csv(Path(args.out) / "attempts.csv")))
        return
    if args.saved:
        L0 = dict(s.split("=", 1) for s in args.settings).get("L0")
        if L0 is None:
            parser.error("--saved needs L0=<the base's pretraining length>")
        print(json.dumps(screen_saved(args.saved, int(L0), args.out, args.samples, args.note), indent=1, default=str))
        return
    c = StudyBase.from_overrides(args.settings, TESTBED)
    print(c.key, json.dumps(spectrum(c.L0, c.head_dim, c.rope_theta)), flush=True)
    if args.dry_run:
        return
    row = screen(c, args.out, args.cache, args.samples, args.note)
    print(json.dumps(row, indent=1, default=str))


if __name__ == "__main__":
    main()
