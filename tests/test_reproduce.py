"""endprompt.reproduce: the smoke preset runs the whole study end to end (base, extensions, training-free scalings,
evaluation) and produces a well-formed table and figures; learning-curve points continue one run; SharedLLM runs
through it."""

from dataclasses import replace

import numpy as np
import pandas as pd

from endprompt import plotting, study_tables
from endprompt.claims import CLAIM_COLUMNS
from endprompt.reproduce import base_scores, run_study
from endprompt.study import PRESETS, Extension
from tests.tolerances import SNAPSHOT_RTOL


def test_smoke_study_end_to_end(tmp_path, study_workdir):
    cfg = replace(PRESETS["smoke"], out_dir=str(tmp_path / "out"), cache_dir=str(study_workdir / "cache"))
    table = run_study(cfg)
    assert set(table["method"]) == {"base", *cfg.methods}
    assert {"seed", "method", "task", "length", "metric", "score", "n", "status"} <= set(table.columns)
    ok = table[table["status"] == "ok"]
    assert ok["score"].notna().all() and set(ok["task"]) >= {"passkey", "niah_single_1", "needle", "perplexity"}
    saved = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(saved) == len(table)
    costs = pd.read_csv(tmp_path / "out" / "costs.csv")
    trained = costs[costs["method"] != "pi"]
    assert (trained["train_tokens"] > 0).all() and (costs[costs["method"] == "pi"]["train_tokens"] == 0).all()
    # matched budgets: every trained method saw the same number of physical tokens (up to one batch)
    assert trained["train_tokens"].max() <= 1.5 * trained["train_tokens"].min()
    assert len(base_scores(table, cfg.L0)) > 0
    judged = pd.read_csv(tmp_path / "out" / "claims.csv")  # the claims judged on what ran: claim (1)'s two arms
    assert tuple(judged.columns) == CLAIM_COLUMNS
    claim1 = judged[judged["claim"] == "1"]
    assert (claim1["seeds"] == len(cfg.seeds)).all() and claim1["mean_a"].notna().all()
    summary = study_tables.study_table(table, cfg.target_len)
    assert set(summary["method"]) == set(table["method"]) and np.isfinite(summary["avg"]).all()
    paths = plotting.study_figures(study_tables.figure_tables(table, cfg.target_len), cfg.L0, cfg.target_len,
                                   tmp_path / "figs", prefix="smoke")
    assert {p.stem for p in paths} >= {"smoke_score_by_length", "smoke_tasks_at_target", "smoke_cost_vs_score",
                                        "smoke_needle"}
    # an interrupted or repeated study continues from its completed runs: nothing is trained or evaluated again
    (tmp_path / "out" / "results.csv").unlink()
    resumed = run_study(cfg)
    pd.testing.assert_frame_equal(resumed, table)
    # a rerun elsewhere reuses the cached base (no pretraining) and, being seeded, reproduces the rows
    again = run_study(replace(cfg, methods=("pi",), out_dir=str(tmp_path / "again")))
    cols = ["method", "task", "length", "metric", "score", "status"]
    pd.testing.assert_frame_equal(again[cols].reset_index(drop=True),
                                  table[table["method"].isin(["base", "pi"])][cols].reset_index(drop=True))


def test_learning_curve_points_continue_one_run(tmp_path, study_workdir):
    # issue 13: every trained arm evaluated at points of its budget; continuing the run from point to point must give
    # the model of one uninterrupted run (constant schedule), so the last point is the study's row
    smoke = replace(PRESETS["smoke"], cache_dir=str(study_workdir / "cache"), methods=("endprompt",),
                    eval_lengths=(256,))
    curved = run_study(replace(smoke, out_dir=str(tmp_path / "curve"), curve=(0.5, 1.0)))
    curves = pd.read_csv(tmp_path / "curve" / "curves.csv")
    points = curves.groupby("steps")["train_tokens"].first()
    assert list(curves["budget_fraction"].unique()) == [0.5, 1.0] and len(points) == 2
    assert 0 < points.iloc[0] < points.iloc[1]
    run = tmp_path / "curve" / "runs" / "endprompt-seed0"
    assert not (run / "checkpoints").exists() and not (run / "final").exists()  # weights are not kept by default
    drawn = study_tables.curve_table(curves, 256)
    assert set(drawn["budget_fraction"]) == {0.5, 1.0} and "held-out perplexity" in set(drawn["measure"])
    plotting.save(plotting.plot_learning_curves(drawn, 256), "curves", tmp_path)
    once = run_study(replace(smoke, out_dir=str(tmp_path / "once"), keep_weights=True))
    kept = tmp_path / "once" / "runs" / "endprompt-seed0"
    assert (kept / "final" / "config.json").exists() and not (kept / "checkpoints").exists()
    cols = ["method", "task", "length", "metric", "score"]
    last = curves[curves["budget_fraction"] == 1.0][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(last, once[once["method"] == "endprompt"][cols].reset_index(drop=True),
                                  rtol=SNAPSHOT_RTOL)
    pd.testing.assert_frame_equal(curved[cols], once[cols])
    # the second point trained only the new steps: its tokens are those of the one uninterrupted run
    assert once[once["method"] == "endprompt"]["train_tokens"].iloc[0] == points.iloc[1]


def test_smoke_study_runs_sharedllm(tmp_path, study_workdir):
    """The SharedLLM arm trains through the study, is read back with load_sharedllm and evaluated at every length."""
    cfg = replace(PRESETS["smoke"], methods=("sharedllm",), eval_lengths=(512,), out_dir=str(tmp_path / "out"),
                  extension=Extension(tokens=2 * 512, batch_tokens=1024, docs=32),
                  cache_dir=str(study_workdir / "cache"))
    table = run_study(cfg)
    shared = table[table["method"] == "sharedllm"]
    ok = shared[shared["status"] == "ok"]
    assert set(ok["task"]) >= {"passkey", "niah_single_1", "needle", "perplexity"} and ok["score"].notna().all()
    assert set(ok["length"]) == {512}  # 2 L0: the prompts have context chunks
    assert (shared["train_tokens"] == 2 * 512).all()  # one step of two L0 + 4-chunk samples
    ppl = ok[ok["metric"] == "ppl_truncated"]["score"]
    assert (ppl < 260).all()  # better than uniform over the byte vocabulary: a trained model was evaluated


def test_a_study_directory_keeps_the_end_prompt_budget_its_runs_used(tmp_path):
    """Runs of a cue arm trained with one b_cue never share a study.json with another b_cue; collecting a study reads
    the budget it recorded instead of pretraining a base to ask its tokenizer."""
    import json

    import pytest

    from endprompt.reproduce import _check_cue_budget, collect_study

    bpe = replace(PRESETS["study-bpe"], out_dir=str(tmp_path), methods=("endprompt", "full"), seeds=(0,))
    (tmp_path / "runs" / "full-seed0").mkdir(parents=True)
    (tmp_path / "study.json").write_text(json.dumps({"b_cue": 52}))
    _check_cue_budget(tmp_path, bpe)  # no cue arm has run here yet
    (tmp_path / "runs" / "endprompt-seed0").mkdir()
    with pytest.raises(ValueError, match=r"holds runs of endprompt trained with b_cue=52 \(its study.json\), and this "
                                         r"study's is 19: give another out_dir"):
        _check_cue_budget(tmp_path, bpe)
    _check_cue_budget(tmp_path, replace(bpe, b_cue=52))  # the same budget as its runs
    (tmp_path / "study.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"records no end-prompt budget \(b_cue\) for the cue arms endprompt"):
        collect_study(replace(bpe, b_cue=None), require_all=False)
