"""endprompt.cli: the demo and the reproduce command end to end at smoke size, and bad input as exit code 2."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from endprompt.cli import main


@pytest.fixture
def workdir(study_workdir):
    """The study tests' shared directory: the commands' default ``cache/`` there is built once per session."""
    return study_workdir


def test_help_is_instant_and_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "endprompt.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "train", "eval", "reproduce", "claims"):
        assert command in out.stdout


@pytest.mark.parametrize("layout", ["nested", "flat"])  # study.json as StudyConfig writes it, and the byte study's
def test_claims_judges_a_committed_studys_tables(tmp_path, capsys, layout):
    ppl = [(m, s, n, v) for m, vals in (("endprompt", (40, 41, 39, 50, 52, 49)), ("full", (42, 43, 41, 40, 41, 40)))
           for s in range(3) for n, v in ((1024, vals[s]), (2048, vals[3 + s]))]
    pd.DataFrame([{"method": m, "seed": s, "task": "perplexity", "metric": "ppl_sliding", "length": n, "score": v,
                   "status": "ok"} for m, s, n, v in ppl]).to_csv(tmp_path / "results.csv", index=False)
    settings = {"base": {"L0": 256}, "extension": {"factor": 8}} if layout == "nested" else {"L0": 256, "factor": 8}
    (tmp_path / "study.json").write_text(json.dumps(settings))
    with pytest.raises(SystemExit) as done:
        main(["claims", str(tmp_path)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "(4) EndPrompt loses ground" in out and "supported (3 seeds); for: endprompt vs full: ppl@target" in out
    judged = pd.read_csv(tmp_path / "claims.csv")
    assert set(judged[judged["measure"] == "ppl@target"]["length"]) == {"2048", "1024->2048"}
    (tmp_path / "study.json").write_text(json.dumps({"L0": 256}))
    with pytest.raises(SystemExit) as done:  # bad input: exit code 2, the message names the value and the fix
        main(["claims", str(tmp_path)])
    assert done.value.code == 2 and "names no L0 and factor (found L0=256, factor=None)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["claims", str(tmp_path / "nothing")])
    assert done.value.code == 2 and "has no results.csv or study.json" in capsys.readouterr().err


def test_demo_at_smoke_size(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    main(["demo", "--out", "demo", "--samples", "2", "--steps", "2"])
    out = capsys.readouterr().out
    coverage = pd.read_csv(workdir / "demo" / "coverage.csv").set_index("recipe")["share_observed"]
    assert coverage["full"] == 1.0 and 0 < coverage["endprompt"] < coverage["pose"] < 1
    assert "with the collator's mask" in out and "2 steps, loss" in out
    assert (workdir / "demo" / "tiny-endprompt" / "final" / "config.json").exists()


def test_reproduce_command_at_smoke_size(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit) as done:
        main(["reproduce", "--preset", "smoke", "--out", "smoke", "--methods", "pi"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    table = pd.read_csv(workdir / "smoke" / "results.csv")
    assert set(table["method"]) == {"base", "pi"} and (table[table["status"] == "ok"]["score"].notna()).all()
    assert "passkey_k_max" in out and (workdir / "smoke" / "figures" / "02_smoke_score_by_length.png").exists()
    assert "the paper's claims" in out and "not measured" in out  # no trained arm ran: nothing to judge
    assert (pd.read_csv(workdir / "smoke" / "claims.csv")["outcome"] == "not measured").all()


def test_reproduce_collect_tables_the_finished_runs_only(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit) as done:
        main(["reproduce", "--preset", "smoke", "--out", "collect", "--methods", "pi"])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:  # yarn never ran: collected without it, nothing trained or evaluated
        main(["reproduce", "--preset", "smoke", "--out", "collect", "--methods", "pi,yarn", "--collect"])
    assert done.value.code == 0
    assert set(pd.read_csv(workdir / "collect" / "results.csv")["method"]) == {"base", "pi"}
    assert not (workdir / "collect" / "runs" / "yarn-seed0").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:  # bad input: exit code 2, the message names the runs and the fix
        main(["reproduce", "--preset", "smoke", "--out", "nothing", "--methods", "yarn", "--collect"])
    assert done.value.code == 2
    assert "no finished run for base-seed0, yarn-seed0; run them" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["reproduce", "--preset", "huge"],
     "unknown study preset 'huge'; presets are: demo, study, study-bpe, study-bpe-long, smoke"),
    (["reproduce", "--preset", "smoke", "--methods", "yarn2"], r"unknown methods \['yarn2'\]"),
    (["train", "--preset", "tiny-cpu", "--set", "recipe.name=nope"], "recipe.name='nope' is not valid"),
])
def test_bad_input_exits_2_naming_the_value(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_learning_curves_draw_and_measure_the_cost_to_reach_full_length(tmp_path, capsys):
    from endprompt.cli import learning_curves
    from tests.test_study_tables import curves

    curves().to_csv(tmp_path / "curves.csv", index=False)
    path = learning_curves(tmp_path, "t", 2048, tmp_path / "figures")
    assert path == tmp_path / "figures" / "02_t_learning_curves.png" and path.exists()
    reach = pd.read_csv(tmp_path / "cost_to_quality.csv")
    fast = reach[(reach["method"] == "fast") & (reach["measure"] == "passkey exact match (%)")].iloc[0]
    assert fast["reached"] and fast["token_fraction"] == pytest.approx(1 / 8)
    assert "token_fraction" in capsys.readouterr().out
