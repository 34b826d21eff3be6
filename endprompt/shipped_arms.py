"""Extended models the repository ships: trained arms of a study, evaluated by the demo without retraining.

Re-forming retrieval after an 8x PI extension takes about 8M tokens of full-length fine-tuning on the BPE study base
(`results/testbed/README.md`): about 24 minutes of training on this project's 2-core CPU, more than the 15 minutes
`make demo` may take. So the demo trains the arms itself for a short budget and, beside them, evaluates arms that the
study (`endprompt reproduce --preset study-bpe`) trained for the whole budget, shipped under
``assets/study-extensions/<study>/<method>-seed<seed>/`` as stock checkpoints (fp32, exactly as the run saved them),
each with ``record.json``: the run's cost (steps, tokens, wall time, throughput, peak memory), status and provenance.

Adding an arm is one entry in `SHIPPED_ARMS` after `ship` copied it from a finished run kept with
``StudyConfig.keep_weights``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["ASSETS", "ShippedArm", "SHIPPED_ARMS", "ship", "shipped_arm"]

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "study-extensions"
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
RECORD_KEYS = ("status", "steps", "tokens", "wall_time_s", "tokens_per_s", "peak_memory_bytes")


@dataclass(frozen=True)
class ShippedArm:
    """One trained arm of a study whose final model the repository ships.

    Attributes:
        method: the trained arm (a key of `endprompt.study.TRAINED`) that made it.
        study: the preset whose run it is (its name: ``study-bpe``).
        seed: the run's seed (its documents, initialisation of the data order and evaluation prompts).
    """

    method: str
    study: str
    seed: int

    def __post_init__(self):
        if not self.method or not self.study or self.seed < 0:
            raise ValueError(f"{self}: give the arm's method, its study preset and a seed >= 0")

    @property
    def path(self) -> Path:
        return ASSETS / self.study / f"{self.method}-seed{self.seed}"

    def record(self) -> dict:
        """The run's cost and provenance (``record.json``); a clear error when the arm is not shipped."""
        file = self.path / "record.json"
        if not file.exists():
            raise FileNotFoundError(f"{self} is not shipped: {file} is missing; make it with "
                                    f"endprompt.shipped_arms.ship from a finished run of --preset {self.study} kept "
                                    "with keep_weights=True")
        return json.loads(file.read_text())


SHIPPED_ARMS: dict[str, ShippedArm] = {
    # study-bpe's seed 1 (one seed for both, so they trained on the same documents), 8M-token budget
    "full@8M": ShippedArm("full", "study-bpe", 1),
    "endprompt@8M": ShippedArm("endprompt", "study-bpe", 1),
}
"""Shipped arms by the name the demo's tables give them: ``<method>@<tokens>`` (the budget it trained on)."""


def shipped_arm(name: str) -> ShippedArm:
    """The shipped arm ``name``, or a clear error listing the shipped ones."""
    if name not in SHIPPED_ARMS:
        raise ValueError(f"unknown shipped arm {name!r}; shipped arms are: {', '.join(SHIPPED_ARMS) or 'none'}")
    return SHIPPED_ARMS[name]


def ship(run_dir: str | Path, arm: ShippedArm, base_key: str) -> Path:
    """Copy the final model of a finished study run (``run_dir/final``) to ``arm.path`` with its ``record.json``.

    ``base_key`` names the run's base (`endprompt.study_base.StudyBase.key`, its directory under
    ``assets/study-bases/``): the record keeps it, and the run's training configuration is kept with the base's path
    made relative to the repository, so nothing of this machine's paths is shipped. Refuses a run that did not
    complete.
    """
    run_dir, final = Path(run_dir), Path(run_dir) / "final"
    result = json.loads((run_dir / "train_result.json").read_text())
    if result.get("status") != "completed" or not (final / "model.safetensors").exists():
        raise ValueError(f"{run_dir} holds no completed run with its final model (status {result.get('status')!r}); "
                         "finish it with keep_weights=True first")
    out = arm.path
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copyfile(final / name, tmp / name)
    config = yaml.safe_load((final / "endprompt_config.yaml").read_text())
    config["model"]["path"] = f"assets/study-bases/{base_key}"
    config["run"]["out_dir"] = f"results/{arm.study}/runs/{run_dir.name}"
    (tmp / "endprompt_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    record = {**{k: result[k] for k in RECORD_KEYS}, "method": arm.method, "study": arm.study, "seed": arm.seed,
              "base": base_key}
    (tmp / "record.json").write_text(json.dumps(record, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # the arm appears whole or not at all
    return out
