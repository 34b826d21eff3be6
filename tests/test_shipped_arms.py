"""endprompt.shipped_arms: a finished study run ships as a stock checkpoint with its record, and a study evaluates it
beside the arms it trains, with the shipped run's cost; the arms the repository ships load as this study's."""

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from endprompt import shipped_arms
from endprompt.reproduce import load_trained, run_study
from endprompt.shipped_arms import SHIPPED_ARMS, ShippedArm, ship
from endprompt.study import PRESETS, StudyConfig


@pytest.fixture
def kept_run(tmp_path_factory, study_workdir):
    """A smoke study's EndPrompt run kept with its weights (the smoke base, 2 training steps)."""
    out = tmp_path_factory.mktemp("kept")
    cfg = replace(PRESETS["smoke"], out_dir=str(out), cache_dir=str(study_workdir / "cache"), methods=("endprompt",),
                  eval_lengths=(256,), keep_weights=True)
    run_study(cfg)
    return cfg, out / "runs" / "endprompt-seed0"


def test_ship_copies_the_model_and_its_record_without_local_paths(kept_run, tmp_path, monkeypatch):
    cfg, run = kept_run
    monkeypatch.setattr(shipped_arms, "ASSETS", tmp_path / "assets")
    arm = ShippedArm("endprompt", "smoke", 0)
    path = ship(run, arm, cfg.base.key)
    assert path == tmp_path / "assets" / "smoke" / "endprompt-seed0"
    record = arm.record()
    result = json.loads((run / "train_result.json").read_text())
    assert record["tokens"] == result["tokens"] > 0 and record["wall_time_s"] == result["wall_time_s"]
    assert record["base"] == cfg.base.key and record["status"] == "completed"
    shipped_config = (path / "endprompt_config.yaml").read_text()
    assert str(tmp_path) not in shipped_config and f"assets/study-bases/{cfg.base.key}" in shipped_config
    kept, copy = load_trained("endprompt", run / "final"), load_trained("endprompt", path)
    for (name, a), (_, b) in zip(kept.state_dict().items(), copy.state_dict().items()):
        assert torch.equal(a, b), name  # the weights exactly as the run saved them
    assert copy.config.rope_parameters == kept.config.rope_parameters


def test_ship_refuses_an_unfinished_run(kept_run, tmp_path, monkeypatch):
    _, run = kept_run
    broken = tmp_path / "run"
    broken.mkdir()
    (broken / "train_result.json").write_text(json.dumps({"status": "stopped"}))
    with pytest.raises(ValueError, match="no completed run"):
        ship(broken, ShippedArm("endprompt", "smoke", 0), "key")
    with pytest.raises(FileNotFoundError, match="is not shipped"):
        ShippedArm("endprompt", "nowhere", 3).record()


def test_a_study_evaluates_shipped_arms_with_their_own_cost(kept_run, tmp_path, monkeypatch):
    cfg, run = kept_run
    monkeypatch.setattr(shipped_arms, "ASSETS", tmp_path / "assets")
    arm = ShippedArm("endprompt", "smoke", 0)
    ship(run, arm, cfg.base.key)
    monkeypatch.setitem(SHIPPED_ARMS, "endprompt@2steps", arm)
    study = replace(cfg, out_dir=str(tmp_path / "study"), methods=("pi",), shipped=("endprompt@2steps",),
                    keep_weights=False)
    table = run_study(study)
    assert set(table["method"]) == {"base", "pi", "endprompt@2steps"}
    shipped = table[table["method"] == "endprompt@2steps"]
    assert (shipped["train_tokens"] == arm.record()["tokens"]).all()
    # the same weights and prompts as the run's own evaluation give the same scores
    own = pd.read_csv(run / "eval.csv")
    cols = ["task", "length", "metric", "score"]
    pd.testing.assert_frame_equal(shipped[cols].reset_index(drop=True), own[cols].reset_index(drop=True))
    costs = pd.read_csv(tmp_path / "study" / "costs.csv").set_index("method")
    assert costs.loc["endprompt@2steps", "train_tokens"] == arm.record()["tokens"]
    other = replace(study, out_dir=str(tmp_path / "x4"), extension=replace(study.extension, factor=4))
    with pytest.raises(ValueError, match="by 8.0x; this study extends .* by 4x"):
        run_study(other)


def test_unknown_shipped_arms_name_the_shipped_ones():
    with pytest.raises(ValueError, match="unknown shipped arm 'full@1T'"):
        StudyConfig(shipped=("full@1T",))


@pytest.mark.parametrize("name", sorted(SHIPPED_ARMS))
def test_the_shipped_arms_are_the_study_runs_they_claim(name):
    arm = SHIPPED_ARMS[name]
    study = PRESETS[arm.study]
    record = arm.record()
    assert record["status"] == "completed" and record["base"] == study.base.key
    assert record["tokens"] <= study.extension.tokens * 1.01 and (record["method"], record["seed"]) == (arm.method,
                                                                                                      arm.seed)
    config = json.loads((arm.path / "config.json").read_text())
    assert config["rope_parameters"]["factor"] == study.extension.factor
    assert config["max_position_embeddings"] == study.target_len
