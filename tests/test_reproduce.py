"""endprompt.reproduce: the smoke preset runs the whole study end to end (base, extensions, training-free scalings,
evaluation) and produces a well-formed table and figures; the mixture builds fixed-length documents."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from endprompt import plotting
from endprompt.mixture import build_mixture, parse_mixture, synthetic_document
from endprompt.reproduce import PRESETS, StudyConfig, base_scores, run_study
from endprompt.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def test_mixture_documents_are_fixed_length_with_examples_of_varying_place_and_size(tmp_path):
    for kind in ("passkey", "niah", "vt", "mqar"):
        doc = synthetic_document(kind, 256, TOK, [0, 1])
        assert len(doc) == 256, kind
    ends = []
    for seed in range(40):
        text = TOK.decode(synthetic_document("passkey", 256, TOK, [seed]))
        key = text.split("The pass key is ")[1][:5]
        answer = f"What is the pass key? The pass key is {key}."
        assert text.count(answer) == 1 and text.count(f"{key} is the pass key.") == 1
        ends.append(text.index(answer) + len(answer))
    # the answer must not sit at a fixed place (a base learns the place instead of the retrieval)
    assert min(ends) < 160 and max(ends) > 230 and np.std(ends) > 20
    corpus = build_mixture("mixture:natural=1,passkey=1", TOK, 128, 50, cache_dir=str(tmp_path), progress=False)
    assert len(corpus) == 50 and all(len(corpus.doc(i)) == 128 for i in range(50))
    assert sum(corpus.meta["kinds"].values()) == 50
    with pytest.raises(ValueError, match="unknown mixture component 'code'"):
        parse_mixture("mixture:code=1")


def test_smoke_study_end_to_end(tmp_path):
    cfg = replace(PRESETS["smoke"], out_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
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
    summary = plotting.study_table(table, cfg.target_len)
    assert set(summary["method"]) == set(table["method"]) and np.isfinite(summary["avg"]).all()
    paths = plotting.study_figures(table, cfg.L0, cfg.target_len, tmp_path / "figs", prefix="smoke")
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
