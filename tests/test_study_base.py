"""endprompt.study_base: one base model's settings, its key, and its (two-stage) pretraining through train()."""

import json

import pandas as pd
import pytest
import yaml

from endprompt.reproduce import SHIPPED
from endprompt.study_base import StudyBase, pretrain_base

TINY = {"L0": 256, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "steps": 1, "batch": 2, "warmup": 1, "docs": 4,
        "mixture": "mixture:passkey=1"}


def test_defaults_name_the_shipped_base():
    # the study finds its shipped base by this key: a new default or a renamed field would silently retrain
    assert (SHIPPED / StudyBase().key / "config.json").exists(), StudyBase().key
    shipped = json.loads((SHIPPED / StudyBase().key / "config.json").read_text())
    base = StudyBase()
    assert (shipped["hidden_size"], shipped["num_hidden_layers"], shipped["num_attention_heads"],
            shipped["max_position_embeddings"]) == (base.hidden_size, base.num_layers, base.num_heads, base.L0)


def test_key_names_every_setting_that_differs_from_the_defaults():
    base = StudyBase.from_overrides(["L0=2048", "rope_theta=5e5", "num_heads=2", "steps=10", "vocab_size=4096"])
    assert (base.L0, base.rope_theta, base.head_dim, base.steps, base.vocab_size) == (2048, 5e5, 64, 10, 4096)
    assert base.key.startswith("base-L2048-h128-l4-s10-") and {"-hd64", "-th500000", "-bpe4096"} <= {
        f"-{t}" for t in base.key.split("-")}
    keys = {StudyBase(**{name: value}).key for name, value in [("warmup", 7), ("seed", 1), ("mixed_precision", "bf16"),
                                                               ("rope_theta", 1e5), ("lr", 1e-3)]}
    assert len(keys) == 5 and StudyBase().key not in keys
    assert StudyBase(short_L0=128, short_steps=5).key.endswith("-short128x5")
    assert StudyBase(short_L0=128, short_steps=5, long_lr=5e-4).key.endswith("-short128x5-llr0.0005")
    assert StudyBase.from_overrides(["steps=7"], base=base).key == base.key.replace("-s10-", "-s7-")


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="name=value"):
        StudyBase.from_overrides(["depth=4"])
    with pytest.raises(ValueError, match="even head_dim"):
        StudyBase(hidden_size=96, num_heads=32)
    with pytest.raises(ValueError, match="vocab_size=100"):
        StudyBase(vocab_size=100)
    with pytest.raises(ValueError, match="short_L0=128"):
        StudyBase(short_L0=128)
    with pytest.raises(ValueError, match="long_lr=0.001"):
        StudyBase(long_lr=1e-3)  # no second stage to apply it to
    with pytest.raises(ValueError, match="mixed_precision='fp8'"):
        StudyBase(mixed_precision="fp8")


def test_two_stage_pretraining_short_then_long(tmp_path):
    base = StudyBase(**TINY, short_L0=128, short_steps=2, long_lr=1e-4)
    result, final = pretrain_base(base, tmp_path / "run", tmp_path / "cache", progress=False)
    assert result["tokens"] == 2 * (2 * 2) * 128 + 1 * 2 * 256  # the short stage: twice the sequences, half as long
    log = pd.read_json(tmp_path / "run" / "pretrain_metrics.jsonl", lines=True)
    assert list(log["stage"]) == ["short", "long"]  # each stage logs its last step
    config = json.loads((final / "config.json").read_text())
    assert config["max_position_embeddings"] == 256 and config["num_hidden_layers"] == 1
    lrs = {run: yaml.safe_load((tmp_path / "run" / run / "config.yaml").read_text())["optim"]["lr"]
           for run in ("short", ".")}
    assert lrs == {"short": base.lr, ".": 1e-4}  # each stage at its own peak
    stamp = (final / "model.safetensors").stat().st_mtime_ns
    again, _ = pretrain_base(base, tmp_path / "run", tmp_path / "cache", progress=False)  # reused, not retrained
    assert again["tokens"] == result["tokens"] and (final / "model.safetensors").stat().st_mtime_ns == stamp
