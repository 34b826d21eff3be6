"""endprompt.reproduce: the smoke preset runs the whole study end to end (base, extensions, training-free scalings,
evaluation) and produces a well-formed table and figures; the arms are typed configurations with matched budgets."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from endprompt import plotting, study_tables
from endprompt.claims import CLAIM_COLUMNS
from endprompt.reproduce import PRESETS, TRAINED, Extension, StudyConfig, base_scores, extension_config, run_study
from endprompt.shipped_arms import shipped_arm
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


def test_bad_study_config():
    with pytest.raises(ValueError, match="unknown methods \\['yarn2'\\]"):
        StudyConfig(methods=("yarn2",))
    with pytest.raises(ValueError, match="schedule='cosin'"):
        Extension(schedule="cosin")
    with pytest.raises(ValueError, match="factor must be >= 2"):
        Extension(factor=1)


def test_extension_settings_reach_every_arm(tmp_path):
    cfg = replace(PRESETS["study"], extension=Extension(factor=4, lr=1e-4, schedule="cosine", warmup=7, docs=99))
    for method in TRAINED:
        optim = extension_config(cfg, method, tmp_path, 0, tmp_path).optim
        assert (optim.schedule, optim.warmup_steps) == ("cosine", 7) and optim.lr == (TRAINED[method].lr or 1e-4)
    one = extension_config(cfg, "endprompt", tmp_path, 0, tmp_path)
    assert one.recipe.target_len == 4 * cfg.L0 == cfg.target_len and one.data.mixture_docs == 99
    assert one.data.doc_len_range is None  # the committed study: each recipe's own document length
    shared = replace(cfg, extension=Extension(factor=4, shared_documents=True))
    ranges = {extension_config(shared, m, tmp_path, 0, tmp_path).data.doc_len_range for m in TRAINED}
    assert ranges == {(cfg.L0 // 4, 4 * cfg.L0)}  # one set of documents for every arm


def test_every_trained_arm_is_a_typed_config_with_a_matched_budget(tmp_path):
    cfg = PRESETS["study"]
    tokens = {}
    for method in TRAINED:
        train_cfg = extension_config(cfg, method, tmp_path / "base", 1, tmp_path / method)
        r = train_cfg.recipe
        assert train_cfg.model.original_len == cfg.L0
        assert train_cfg.model.path == str(tmp_path / "base") and train_cfg.run.seed == 1
        if TRAINED[method].is_sharedllm:  # an architecture: L0 + 4 chunks of L0/4, its local window L0, no PI
            s = train_cfg.sharedllm
            assert (s.chunk_size, s.window, r.target_len) == (cfg.L0 // 4, cfg.L0, cfg.L0 + 4 * cfg.L0 // 4)
            assert r.physical_len == r.target_len and not r.spec.extends_positions
        else:
            assert r.target_len == cfg.target_len
            assert r.physical_len == (cfg.target_len if r.name in ("full", "longlora") else cfg.L0)
        assert r.b == (cfg.b_cue if r.spec.uses_cues else cfg.b_tail)
        tokens[method] = train_cfg.optim.max_steps * train_cfg.optim.micro_batch_size * r.physical_len
    budget = cfg.extension.tokens
    assert max(tokens.values()) <= 1.01 * min(tokens.values()) and abs(tokens["endprompt"] - budget) < 4096
    one = extension_config(cfg, "endprompt-end", tmp_path, 0, tmp_path)
    assert one.recipe.cues == ("End.",) and one.recipe.name == "endprompt"
    longlora = extension_config(cfg, "longlora", tmp_path, 0, tmp_path).optim
    # its adapters train at their own rate; the weights it trains in full keep every arm's (LongLoRA: full FT's)
    assert (longlora.lr, longlora.adapter_lr) == (cfg.extension.lr, 2e-3)
    assert all(extension_config(cfg, m, tmp_path, 0, tmp_path).optim.adapter_lr is None for m in TRAINED
               if m != "longlora")
    ropes = {method: extension_config(cfg, method, tmp_path, 0, tmp_path).rope.rope_type for method in TRAINED}
    assert {m for m, r in ropes.items() if r != "linear"} == {"endprompt-yarn", "full-yarn"}  # PI elsewhere (paper)
    assert ropes["endprompt-yarn"] == "yarn" and TRAINED["endprompt-yarn"].recipe == TRAINED["endprompt"].recipe


def test_presets_study_shipped_bases_with_their_own_cue_budget():
    from endprompt.recipe import DEFAULT_CUES, tokenize_cues
    from endprompt.reproduce import SHIPPED
    from endprompt.tokenizer import load_tokenizer

    for name, cfg in PRESETS.items():  # a preset never pretrains its base silently (the smoke base is tiny)
        assert name == "smoke" or (SHIPPED / cfg.base.key / "config.json").exists(), (name, cfg.base.key)
    for name in ("study", "study-bpe", "demo"):
        cfg = PRESETS[name]
        tok = load_tokenizer(None, SHIPPED / cfg.base.key)
        longest = max(len(ids) for ids in tokenize_cues(DEFAULT_CUES, tok))
        assert cfg.b_cue == longest + 2, (name, longest)  # the body is as long as the longest cue allows
    bpe = PRESETS["study-bpe"]
    assert len(load_tokenizer(None, SHIPPED / bpe.base.key)) == bpe.base.vocab_size == 2048
    assert bpe.extension.shared_documents and len(bpe.curve) == 4
    demo = PRESETS["demo"]  # the main job: the study's base, documents and first curve point, and its shipped arms
    assert demo.base == bpe.base and demo.extension == replace(bpe.extension, tokens=bpe.extension.tokens // 8)
    assert demo.shipped and set(demo.seeds) == {shipped_arm(n).seed for n in demo.shipped}


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


def test_bad_learning_curves_name_the_fix():
    with pytest.raises(ValueError, match="ending at 1.0"):
        StudyConfig(curve=(0.5, 0.25, 1.0))
    with pytest.raises(ValueError, match="ending at 1.0"):
        StudyConfig(curve=(0.5,))
    with pytest.raises(ValueError, match="schedule='cosine'"):
        StudyConfig(curve=(0.5, 1.0), extension=Extension(schedule="cosine"))


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


def test_study_bpe_long_differs_from_study_bpe_only_in_its_documents():
    long, bpe = PRESETS["study-bpe-long"], PRESETS["study-bpe"]
    assert long.extension.doc_layout == "uniform-whole" and bpe.extension.doc_layout == "log-part"
    assert replace(long, name=bpe.name, out_dir=bpe.out_dir, extension=bpe.extension) == bpe
    with pytest.raises(ValueError, match=r"Extension.doc_layout='uniform-whole' lays out the shared documents; set "
                                         r"shared_documents=True"):
        Extension(doc_layout="uniform-whole")
    cfg = extension_config(long, "full", Path("base"), 0, Path("out"))
    assert cfg.data.doc_layout == "uniform-whole" and cfg.data.doc_len_range == (long.L0 // 4, long.target_len)
